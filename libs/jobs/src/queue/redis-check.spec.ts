import { redisStartError } from './redis-check';

describe('redisStartError', () => {
  it('says where, the cause, and what to do', () => {
    expect(redisStartError('redis://db:6379', 'connect ECONNREFUSED 10.0.0.1:6379').message).toBe(
      'cannot use Redis at redis://db:6379: connect ECONNREFUSED 10.0.0.1:6379 (is redis-server running there, on that port?)',
    );
    expect(redisStartError('redis://db', 'NOAUTH Authentication required.').message).toContain(
      'the server needs a password: REDIS_URL=redis://[user]:PASSWORD@host:port',
    );
    expect(redisStartError('redis://db', 'something new').message).toBe(
      'cannot use Redis at redis://db: something new',
    );
  });
});
