import type { INestApplication } from '@nestjs/common';
import { DocumentBuilder, SwaggerModule, type OpenAPIObject } from '@nestjs/swagger';
import { API_MODELS } from './schemas';

const DESCRIPTION = [
  'Submit experiments, follow them, fetch their results: the API a gpu-sidecar worker serves on',
  "API_LISTEN, and on the front host through the relay's RELAY_LISTEN (README.md, section Job",
  'API; libs/jobs/README.md). The worker serves this document itself, and it describes every',
  'answer the worker gives, refusals included: JSON `{statusCode, error, message}` (HttpError)',
  'whose message says what to fix.',
  '',
  "No credentials: the API answers only requests whose Host is a loopback name, API_LISTEN's",
  'host or a name in API_HOSTS (else 421), and refuses a POST or DELETE whose Origin is another',
  "site (403). bull-board's queue pages under /queues are not described here.",
].join('\n');

/** The document's frame: what the controllers' decorators do not say. */
function frame(): Omit<OpenAPIObject, 'paths'> {
  return (
    new DocumentBuilder()
      .setTitle('gpu-sidecar worker API')
      .setDescription(DESCRIPTION)
      .setVersion('1')
      .setLicense('MIT', 'https://opensource.org/licenses/MIT')
      // Relative: the host and port the document was fetched from (the worker, or the relay).
      .addServer('/', 'where this document was fetched from: the worker or the relay')
      .addTag('jobs', 'submit, list, follow and cancel jobs; their logs, events and output files')
      .addTag('experiments', 'what can be submitted')
      .addTag('health', 'liveness, readiness, the whole health report, Prometheus metrics')
      .build()
  );
}

/**
 * Builds the OpenAPI document of every route `app` serves, with the job API's schemas, and
 * serves it at /docs (Swagger UI) and /docs-json. Called on the real application before it
 * listens, so the routes are registered ahead of Nest's not-found handler. SwaggerModule builds
 * the document on its first request, once.
 */
export function setupOpenApi(app: INestApplication): void {
  SwaggerModule.setup('docs', app, () => ({
    ...SwaggerModule.createDocument(app, frame(), { extraModels: API_MODELS }),
    // Declared empty on purpose: no operation takes credentials (the Host and Origin checks
    // are what guards the API), and saying so lets a linter tell an operation that forgot its
    // security from one that has none.
    security: [],
  }));
}
