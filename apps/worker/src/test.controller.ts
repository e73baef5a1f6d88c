import { Controller, Get } from '@nestjs/common';

/** The route the front's web app already calls to see that the GPU host is up. */
@Controller()
export class TestController {
  @Get('test')
  test(): { response: 'ok' } {
    return { response: 'ok' };
  }
}
