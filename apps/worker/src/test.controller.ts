import { Controller, Get } from '@nestjs/common';
import { ApiOkResponse, ApiOperation, ApiTags } from '@nestjs/swagger';
import { ApiHostGuard } from '../../../libs/jobs/src';

/** The route the front's web app already calls to see that the GPU host is up. */
@ApiTags('health')
@ApiHostGuard()
@Controller()
export class TestController {
  @Get('test')
  @ApiOperation({ summary: "the GPU host is up (the route the front's web app calls)" })
  @ApiOkResponse({
    description: 'always the same',
    content: {
      'application/json': {
        schema: {
          type: 'object',
          required: ['response'],
          properties: { response: { type: 'string', enum: ['ok'] } },
        },
      },
    },
  })
  test(): { response: 'ok' } {
    return { response: 'ok' };
  }
}
