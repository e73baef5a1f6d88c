import { Inject, Injectable, type OnModuleInit } from '@nestjs/common';
import { ApplicationConfig, HttpAdapterHost, ModuleRef } from '@nestjs/core';
import { DocumentBuilder, SwaggerModule } from '@nestjs/swagger';

/**
 * Serves OpenAPI at /docs (Swagger UI) and /docs-json from inside the module, so the worker's
 * main needs no change. SwaggerModule wants the application object; during onModuleInit the
 * routes are registered but the not-found handler is not yet, so routes added here are served.
 * The object handed to SwaggerModule exposes exactly what it reads: the container, the
 * application config and the HTTP adapter.
 */
@Injectable()
export class OpenApiDocs implements OnModuleInit {
  constructor(
    @Inject(ModuleRef) private readonly moduleRef: ModuleRef,
    @Inject(HttpAdapterHost) private readonly host: HttpAdapterHost,
    @Inject(ApplicationConfig) private readonly appConfig: ApplicationConfig,
  ) {}

  onModuleInit(): void {
    const adapter = this.host.httpAdapter;
    if (!adapter) return; // a standalone context (no HTTP)
    const app = {
      container: (this.moduleRef as unknown as { container: unknown }).container,
      config: this.appConfig,
      getHttpAdapter: () => adapter,
      useStaticAssets: (p: string, o: unknown) =>
        (adapter as unknown as { useStaticAssets(p: string, o: unknown): void }).useStaticAssets(
          p,
          o,
        ),
    };
    const doc = new DocumentBuilder()
      .setTitle('gpu-sidecar worker job API')
      .setDescription(
        'Submit experiments, follow them, fetch their results (DESIGN.md, "Job API").',
      )
      .setVersion('1')
      .build();
    type AppArg = Parameters<typeof SwaggerModule.createDocument>[0];
    SwaggerModule.setup('docs', app as unknown as AppArg, () =>
      SwaggerModule.createDocument(app as unknown as AppArg, doc),
    );
  }
}
