// Starts and stops the S3 front end for the daemon: credentials, the object
// store over the manager's pools (and the cold tier's stripe store when it
// runs), and the listening fastify server.
import type { FastifyInstance } from 'fastify';
import { ColdObjectHolders } from '../objects/cold-holders.js';
import type { StripeStoreApi } from '../objects/cold-segments.js';
import { ObjectStore } from '../objects/store.js';
import { InvalidArgument } from '../errors.js';
import type { VolumeManager } from '../volumes/manager.js';
import { loadCredentials } from './credentials.js';
import { buildS3Server } from './server.js';

/**
 * COUCHESTOR_S3_BODY_IDLE_TIMEOUT_MS: how long a request body may stall before
 * RequestTimeout (default 20 s, as S3). Refused at start when not a positive integer.
 */
function bodyIdleTimeoutFromEnv(): number | undefined {
  const v = process.env.COUCHESTOR_S3_BODY_IDLE_TIMEOUT_MS;
  if (v === undefined || v === '') return undefined;
  if (!/^\d{1,9}$/.test(v) || Number(v) === 0) throw new InvalidArgument(`COUCHESTOR_S3_BODY_IDLE_TIMEOUT_MS must be a positive whole number of milliseconds, not ${JSON.stringify(v)}`);
  return Number(v);
}

export interface S3FrontendOptions {
  manager: VolumeManager;
  dataDir: string;
  host: string;
  /** 0 = any free port. */
  port: number;
  /** The cold tier's stripe store; without it cold buckets are refused. */
  stripes?: StripeStoreApi;
  /** Virtual-host-style domains (config s3.domains). */
  domains?: string[];
}

export class S3Frontend {
  private constructor(
    readonly store: ObjectStore,
    readonly server: FastifyInstance,
    readonly host: string,
    readonly port: number,
    private readonly removeHolders: () => void,
  ) {}

  static async start(opts: S3FrontendOptions): Promise<S3Frontend> {
    const keys = loadCredentials(opts.dataDir);
    const store = await ObjectStore.open(opts.manager, opts.stripes);
    // Cold objects' and parts' stripes join pool rebuild, scrub and the reconstruction queue.
    let removeHolders = () => {};
    const cold = opts.manager.cold;
    if (cold && opts.stripes) {
      const holders = new ColdObjectHolders(opts.manager.meta, cold.stripes);
      removeHolders = cold.reconstructor.addSource(holders);
    }
    const server = buildS3Server({ store, keys, domains: opts.domains, bodyIdleTimeoutMs: bodyIdleTimeoutFromEnv() });
    try {
      await server.listen({ port: opts.port, host: opts.host });
    } catch (err) {
      removeHolders();
      throw err;
    }
    const addr = server.server.address();
    return new S3Frontend(store, server, opts.host, typeof addr === 'object' && addr ? addr.port : opts.port, removeHolders);
  }

  /** Stops accepting requests and waits for in-flight ones (the store has nothing else to flush). */
  async close(): Promise<void> {
    await this.server.close();
    this.removeHolders();
  }
}
