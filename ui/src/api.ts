// The dashboard server's API (Kiali-compatible where Kiali has the endpoint).

export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

const MAX_BODY = 32 * 1024 * 1024;

export async function getJSON<T>(path: string, signal?: AbortSignal): Promise<T> {
  let resp: Response;
  try {
    resp = await fetch(path, { signal, headers: { Accept: "application/json" } });
  } catch (e) {
    if (e instanceof DOMException && e.name === "AbortError") throw e;
    throw new ApiError(`The dashboard server is not reachable (${String(e)}); is skein still running?`, 0);
  }
  const text = await resp.text();
  if (text.length > MAX_BODY) throw new ApiError(`${path}: the answer is too large`, resp.status);
  let body: unknown = undefined;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch {
    body = undefined;
  }
  if (!resp.ok) {
    // Kiali's {"error": "..."} or Jaeger's {"errors": [{"msg": "..."}]}.
    const b = (body ?? {}) as { error?: unknown; errors?: Array<{ msg?: unknown }> | null };
    const msg =
      b.error !== undefined
        ? String(b.error)
        : b.errors?.[0]?.msg !== undefined
          ? String(b.errors[0].msg)
          : `${resp.status} ${resp.statusText}`;
    throw new ApiError(msg, resp.status);
  }
  if (body === undefined) throw new ApiError(`${path}: the answer is not JSON`, resp.status);
  return body as T;
}

export function qs(params: Record<string, string | number | boolean | undefined | null>): string {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === "") continue;
    u.set(k, String(v));
  }
  const s = u.toString();
  return s ? `?${s}` : "";
}

export const enc = encodeURIComponent;

// ---- shapes ---------------------------------------------------------------------------------

export type HealthStatus = "Healthy" | "Degraded" | "Failure" | "No health information" | string;

export interface Namespace {
  name: string;
  cluster?: string;
  labels?: Record<string, string>;
}

export interface OverviewNs {
  name: string;
  health: HealthStatus;
  apps: number;
  workloads: number;
  requestRate: number | null;
  errorRate: number | null;
  mtls?: string | null;
  rollouts?: RolloutSummary[];
}

export interface Check {
  code?: string;
  severity: "error" | "warning" | "info" | string;
  message: string;
  path?: string;
  source?: string;
}

export interface ConfigRef {
  kind: string;
  apiVersion?: string;
  name: string;
  namespace: string;
  valid: boolean;
  checks: Check[];
  source?: string;
}

export interface Proxy {
  mode: string;
  configVersion?: string;
  controlVersion?: string;
  synced?: boolean;
  connected?: boolean;
  identity?: string;
  certExpiry?: string;
  admin?: string;
  nack?: { version?: string; error?: string } | null;
}

export interface Pod {
  name: string;
  ip?: string;
  state?: string;
  ready?: boolean;
  restarts?: number;
  containers?: string[];
  proxy?: Proxy | null;
  serviceAccount?: string;
}

export interface WorkloadSummary {
  name: string;
  namespace: string;
  labels?: Record<string, string>;
  app?: string;
  version?: string;
  kind?: string;
  pods?: Pod[];
  health?: HealthStatus;
  rollout?: RolloutSummary | null;
}

/** What the workloads list shows of an Argo Rollout. */
export interface RolloutSummary {
  name: string;
  namespace: string;
  phase?: string;
  icon?: string;
  message?: string;
  currentStepIndex?: number | null;
  stepCount?: number;
  setWeight?: number;
  actualWeight?: number;
  error?: string | null;
}

export interface RolloutMeasurement {
  phase: string;
  value?: string | null;
  startedAt?: string | null;
  message?: string | null;
}

export interface RolloutMetric {
  name: string;
  phase: string;
  icon: string;
  count: number;
  successful: number;
  failed: number;
  inconclusive: number;
  error: number;
  message?: string | null;
  lastValue?: string | null;
  measurements: RolloutMeasurement[];
}

/** An Argo Rollout's status, from its controller (`GET /api/namespaces/{ns}/rollouts`). */
export interface Rollout extends RolloutSummary {
  strategy?: string;
  steps?: Array<{ index: number; text: string; state: "done" | "current" | "pending" }>;
  stableWeight?: number;
  stableRevision?: number | null;
  canaryRevision?: number | null;
  paused?: boolean;
  aborted?: boolean;
  replicas?: { desired: number; current: number; updated: number; ready: number; available: number };
  revisions?: Array<{ revision: number; hash: string; role: string; images: string[]; pods: Array<{ name: string; ready: boolean; state: string; restarts: number; ip: string }> }>;
  analysisRuns?: Array<{ name: string; phase: string; icon: string; message: string; revision: number; metrics: RolloutMetric[] }>;
  conditions?: Array<{ type: string; status: string; reason: string; message: string }>;
  updatedAt?: string;
}

export interface Canary {
  virtualService: string;
  route?: string;
  destinations: Array<{ host: string; subset?: string; weight?: number }>;
  mirror?: { host: string; subset?: string } | null;
}

export interface Workload extends WorkloadSummary {
  services?: string[];
  istioConfig?: ConfigRef[];
  canary?: Canary[];
  workloadStatus?: { desiredReplicas?: number; currentReplicas?: number; availableReplicas?: number; syncedProxies?: number };
  rollout?: Rollout | null;
}

export interface Service {
  name: string;
  namespace: string;
  clusterIP?: string;
  ports?: Array<{ name?: string; port?: number; protocol?: string; targetPort?: number | string }>;
  selector?: Record<string, string>;
  endpoints?: unknown[];
  workloads?: string[];
  istioConfig?: ConfigRef[];
}

export interface ConfigObject {
  kind: string;
  apiVersion?: string;
  name: string;
  namespace?: string;
  source?: { file?: string; line?: number };
  yaml?: string;
  refused?: boolean;
  valid: boolean;
  checks: Check[];
  /** GitOps: the object's sync status in the Application. */
  sync?: { status: string; message?: string | null; git?: string | null; requiresPruning?: boolean; selfHealAt?: string | null };
}

/** GitOps: the Argo CD Application the run syncs. */
export interface ApplicationSync {
  name: string;
  namespace: string;
  repo: string;
  sync: string;
  health: string;
  selfHeal: boolean;
  prune: boolean;
  revision?: { sha: string; subject: string } | null;
  outOfSync: number;
  drifted?: Array<{ kind: string; namespace: string; name: string; message?: string | null; git?: string | null; requiresPruning?: boolean; selfHealAt?: string | null }>;
  conditions: Array<{ type: string; message: string }>;
}

export interface IstioConfig {
  control?: {
    version?: string;
    valid?: boolean;
    lastRejection?: { message: string; at?: string } | null;
  };
  application?: ApplicationSync | null;
  objects: ConfigObject[];
}

export interface Series {
  labels: Record<string, string>;
  datapoints: Array<[number, string]>;
}
export type Metrics = Record<string, Series[] | undefined>;

export interface LogEntry {
  message: string;
  severity?: string;
  timestamp?: string;
  accessLog?: Record<string, string | undefined>;
}

export interface GraphNodeData {
  id: string;
  parent?: string;
  nodeType: string;
  cluster?: string;
  namespace: string;
  workload?: string;
  app?: string;
  version?: string;
  service?: string;
  destServices?: Array<{ cluster?: string; namespace: string; name: string }>;
  traffic?: Array<{ protocol: string; rates?: Record<string, string> }>;
  healthData?: unknown;
  isBox?: string;
  hasCB?: boolean;
  hasVS?: unknown;
  hasMirroring?: boolean;
  hasFaultInjection?: boolean;
  hasRequestRouting?: boolean;
  hasTrafficShifting?: boolean;
  hasRequestTimeout?: boolean;
  hasRetries?: boolean;
  isGateway?: unknown;
  isOutside?: boolean;
  isRoot?: boolean;
  isIdle?: boolean;
  isOutOfMesh?: boolean;
}

export interface GraphEdgeData {
  id: string;
  source: string;
  target: string;
  isMTLS?: string;
  sourcePrincipal?: string;
  destPrincipal?: string;
  responseTime?: string;
  throughput?: string;
  traffic?: {
    protocol: string;
    rates?: Record<string, string>;
    responses?: Record<string, { flags?: Record<string, string>; hosts?: Record<string, string> }>;
  };
}

export interface Graph {
  timestamp: number;
  duration: number;
  graphType: string;
  elements: { nodes: Array<{ data: GraphNodeData }>; edges: Array<{ data: GraphEdgeData }> };
}

export interface HealthEntry {
  requests?: unknown;
  workloadStatuses?: Array<{ name: string; desiredReplicas?: number; availableReplicas?: number }>;
  status?: { status: HealthStatus; errorRatio?: number };
}

export interface JaegerSpan {
  traceID: string;
  spanID: string;
  operationName: string;
  references?: Array<{ refType: string; traceID: string; spanID: string }>;
  startTime: number;
  duration: number;
  tags?: Array<{ key: string; type?: string; value: unknown }>;
  processID: string;
  warnings?: string[] | null;
}

export interface JaegerTrace {
  traceID: string;
  spans: JaegerSpan[];
  processes: Record<string, { serviceName: string; tags?: unknown[] }>;
}

export interface JaegerAnswer<T> {
  data: T;
  errors?: Array<{ code?: number; msg: string }> | null;
}
