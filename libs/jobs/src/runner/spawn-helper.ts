// The spawn helper: a small Node process (`node spawn-helper.js`, started by HelperLauncher) that
// starts job processes for the daemon and follows them (launch.ts), so that fork() copies its few
// MB rather than the daemon's page tables. IPC, one launch per id:
//   daemon → helper: {id, req}          start a job;   {id, signal}  SIGTERM or SIGKILL it
//   helper → daemon: {id, start}, {id, line} (a progress line), {id, end}
// It must never die of what a job does: output goes to the log as bytes (never a whole line in
// memory) and only throttled progress lines of 64 KiB at most cross the IPC channel.
import { launchOne, type LaunchControl, type LaunchRequest } from './launch';

/** A message from the daemon. */
export type HelperRequest =
  { id: number; req: LaunchRequest } | { id: number; signal: 'SIGTERM' | 'SIGKILL' };

function main(): void {
  const live = new Map<number, LaunchControl>();
  let leaving = false;
  const killAll = () => {
    for (const c of live.values()) c.killNow();
  };
  // The daemon went away (even by SIGKILL): no job outlives it, nobody would record its end. A
  // send to a dead daemon fails through its callback, never as an uncaught error; and whatever
  // way this helper ends, its jobs end with it. It waits (2 s at most) for the killed jobs' ends,
  // so that their logs are flushed.
  process.on('disconnect', () => {
    leaving = true;
    killAll();
    if (live.size === 0) process.exit(0);
    setTimeout(() => process.exit(0), 2000);
  });
  process.on('uncaughtException', () => {
    killAll();
    process.exit(1);
  });
  process.on('exit', killAll);
  process.on('message', (m: HelperRequest) => {
    if ('signal' in m) {
      live.get(m.id)?.signal(m.signal);
      return;
    }
    const send = (msg: object) => {
      if (process.connected) process.send!({ id: m.id, ...msg }, () => undefined);
    };
    const ctl = launchOne(m.req, {
      started: (start) => send({ start }),
      progress: (line) => send({ line }),
      ended: (end) => {
        live.delete(m.id);
        send({ end });
        if (leaving && live.size === 0) process.exit(0);
      },
    });
    // `ended` never comes before this line: it waits at least for the log to close.
    live.set(m.id, ctl);
    if (leaving) ctl.killNow();
  });
}

if (require.main === module) main();
