// Listening helper shared by the health and metrics servers: bind a fastify
// instance, report the port actually bound (port 0 = ephemeral), close cleanly.

import type { FastifyInstance } from 'fastify';
import type { AddressInfo } from 'node:net';

export interface RunningHttpServer {
  host: string;
  /** The bound port: the requested one, or the kernel's pick when 0 was asked. */
  port: number;
  close(): Promise<void>;
}

export async function listen(app: FastifyInstance, host: string, port: number): Promise<RunningHttpServer> {
  await app.listen({ host, port });
  const address = app.server.address() as AddressInfo;
  return { host, port: address.port, close: () => app.close() };
}
