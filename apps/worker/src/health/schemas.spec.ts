import 'reflect-metadata';
import { Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { DocumentBuilder, SwaggerModule } from '@nestjs/swagger';
import { HealthReport } from './schemas';

@Module({})
class Empty {}

describe('GET /health schemas', () => {
  it('names the tunnel sessions of /health `TunnelView` in the OpenAPI document, as they always were', async () => {
    const app = await NestFactory.create(Empty, { logger: false });
    const doc = SwaggerModule.createDocument(app, new DocumentBuilder().build(), {
      extraModels: [HealthReport],
    });
    await app.close();
    const schemas = doc.components?.schemas ?? {};
    expect(Object.keys(schemas).sort()).toEqual(['HealthReport', 'TunnelView']);
    expect(schemas.HealthReport).toMatchObject({
      properties: {
        tunnels: { type: 'array', items: { $ref: '#/components/schemas/TunnelView' } },
      },
    });
    expect(schemas.TunnelView).toMatchObject({
      required: ['peer', 'streams'],
      properties: {
        peer: { type: 'string' },
        streams: { type: 'integer' },
        rttMs: { type: 'number' },
      },
    });
  });
});
