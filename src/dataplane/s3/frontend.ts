// Starts and stops the S3 front end for the daemon: credentials, the object
// store over the manager's pools (and the cold tier's stripe store when it
// runs), the listening fastify server, and its couchestor_s3_* metrics.
import type { FastifyInstance } from 'fastify';
import { Counter, Gauge, type Registry } from 'prom-client';
import { log } from '../../log.js';
import { ColdObjectHolders } from '../objects/cold-holders.js';
import type { StripeStoreApi } from '../objects/cold-segments.js';
import { ObjectStore } from '../objects/store.js';
import type { VolumeManager } from '../volumes/manager.js';
import { loadCredentials } from './credentials.js';
import { buildS3Server, type S3ServerStats } from './server.js';

/** Read by the daemon of session 6 only; settings live in couchestor.yaml (s3.bodyIdleTimeoutMs). */
const RETIRED_BODY_IDLE_ENV = 'COUCHESTOR_S3_BODY_IDLE_TIMEOUT_MS';

function registerS3Metrics(stats: S3ServerStats, registry: Registry, store: ObjectStore): void {
  new Counter({
    name: 'couchestor_s3_cold_header_reads_total',
    help: "Shard headers read to tell whether a cold object is lost beyond parity (HEAD, GET, copies, completions): only on pools whose disk was replaced after the object was written and not fully rebuilt since, and only for stripes those pools could make unreadable. 0 on the fast path.",
    registers: [registry],
    collect() {
      this.reset();
      this.inc(store.coldHeaderReads);
    },
  });
  new Gauge({
    name: 'couchestor_s3_cold_pools_unverified',
    help: "Cold pools whose disk replaced one the index may name places of and that no complete whole-pool rebuild onto that disk has verified since (1): cold objects written before it took over are header-checked there (couchestor_s3_cold_header_reads_total). 0 for the other cold pools known to the object store.",
    labelNames: ['pool'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [pool, unverified] of store.coldPoolDisks?.unverifiedPools() ?? []) this.set({ pool }, unverified ? 1 : 0);
    },
  });
  // The server keeps plain totals; each scrape sets them (the registry.ts pattern).
  new Counter({
    name: 'couchestor_s3_idle_timeouts_total',
    help: 'S3 connections closed because the client went idle: direction="request" (a request body stalled, RequestTimeout), direction="response" (the client stopped reading a response).',
    labelNames: ['direction'],
    registers: [registry],
    collect() {
      this.reset();
      this.inc({ direction: 'request' }, stats.requestIdleTimeouts);
      this.inc({ direction: 'response' }, stats.responseIdleTimeouts);
    },
  });
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
  /** config s3.bodyIdleTimeoutMs / s3.sendIdleTimeoutMs (server defaults when absent). */
  bodyIdleTimeoutMs?: number;
  sendIdleTimeoutMs?: number;
  /** The daemon's Prometheus registry: couchestor_s3_* metrics are registered on it. */
  registry?: Registry;
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
      const holders = new ColdObjectHolders(opts.manager.meta, cold.stripes, store.coldPoolDisks);
      removeHolders = cold.reconstructor.addSource(holders);
    }
    if (process.env[RETIRED_BODY_IDLE_ENV] !== undefined) {
      log.warn(`s3: ${RETIRED_BODY_IDLE_ENV} is no longer read: set s3.bodyIdleTimeoutMs in couchestor.yaml`, { bodyIdleTimeoutMs: opts.bodyIdleTimeoutMs });
    }
    const stats: S3ServerStats = { requestIdleTimeouts: 0, responseIdleTimeouts: 0 };
    if (opts.registry) registerS3Metrics(stats, opts.registry, store);
    const server = buildS3Server({ store, keys, domains: opts.domains, bodyIdleTimeoutMs: opts.bodyIdleTimeoutMs, sendIdleTimeoutMs: opts.sendIdleTimeoutMs, stats });
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
