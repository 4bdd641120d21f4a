"""The dashboards: an overview and one per service, gateway, PostgreSQL, Redis and compute."""

from __future__ import annotations

from deploy.monitoring.dashboards.panels import (
    RATE,
    Dashboard,
    Panel,
    Row,
    codes,
    db_pool,
    golden_signals,
    health_probes,
    process_memory,
    q,
    quantile,
    rate_sum,
    redis_client,
    slo_burn,
    targets_up,
)

NO_FAILURE_YET = "the labelled series appears with the first such event"
GPU_ONLY = "exported only while the lattice service has a GPU"

OVERVIEW = Dashboard(
    "catalytic-overview",
    "Catalytic — overview",
    "Golden signals of every service, the SLO burn, and whether everything is up.",
    (
        Row("Up", (targets_up(), health_probes())),
        golden_signals(),
        Row(
            "SLO and gateway",
            (
                slo_burn(),
                Panel(
                    "Gateway responses by class",
                    "What do public clients get back from Envoy: 2xx, 4xx, 5xx per second?",
                    (
                        q(
                            "sum by (envoy_response_code_class) (rate(envoy_http_downstream_rq_xx"
                            f'{{envoy_http_conn_manager_prefix="gateway"}}[{RATE}]))',
                            "{{envoy_response_code_class}}xx",
                        ),
                    ),
                    unit="reqps",
                ),
                process_memory(),
            ),
        ),
    ),
)


def _service_dashboard(service: str, title: str, description: str, *rows: Row) -> Dashboard:
    return Dashboard(
        f"catalytic-{service}",
        title,
        description,
        (
            golden_signals(service),
            Row("Status and objective", (codes(service), slo_burn(service))),
            *rows,
            db_pool(service),
            Row("Dependencies and process", (redis_client(service), process_memory(service))),
        ),
    )


AUTH = _service_dashboard(
    "auth",
    "Catalytic — auth",
    "Sign-ups, log-ins, tokens and API keys: the auth service.",
    Row(
        "Tokens and limits",
        (
            Panel(
                "Token verifications by outcome",
                "How are access tokens checked across the services: verified, from cache, or "
                "refused (expired, invalid, revoked), or could not be checked (unavailable)?",
                (
                    q(
                        rate_sum("catalytic_token_verifications_total", None, "outcome"),
                        "{{service}} {{outcome}}",
                    ),
                ),
                unit="ops",
            ),
            Panel(
                "Requests refused by rate limits",
                "Which limits are refusing requests (429), per service and limit?",
                (
                    q(
                        rate_sum("catalytic_rate_limited_total", None, "limit"),
                        "{{service}} {{limit}}",
                        may_be_empty=NO_FAILURE_YET,
                    ),
                    q(
                        rate_sum("catalytic_rate_limit_errors_total", None, "limit"),
                        "could not check {{service}} {{limit}}",
                        may_be_empty=NO_FAILURE_YET,
                    ),
                ),
                unit="reqps",
            ),
        ),
    ),
)

LATTICE = _service_dashboard(
    "lattice",
    "Catalytic — lattice",
    "Lattice storage and computation: operations, the field cache, the event outbox.",
    Row(
        "Operations",
        (
            Panel(
                "Operations by kind and outcome",
                "Which computations run (fill, transform, path, analysis) and how do they end?",
                (
                    q(
                        rate_sum("catalytic_lattice_operations_total", "lattice", "op", "outcome"),
                        "{{op}} {{outcome}}",
                    ),
                ),
                unit="ops",
            ),
            Panel(
                "Field cache hit ratio and size",
                "Are field reads served from memory, and how much does the cache hold?",
                (
                    q(
                        "sum(rate(catalytic_lattice_cache_hits_total[" + RATE + "])) / "
                        "(sum(rate(catalytic_lattice_cache_hits_total[" + RATE + "])) + "
                        "sum(rate(catalytic_lattice_cache_misses_total[" + RATE + "])))",
                        "hit ratio",
                    ),
                    q("sum(catalytic_lattice_cache_bytes) / 1e9", "GB held"),
                ),
            ),
        ),
    ),
    Row(
        "Event outbox",
        (
            Panel(
                "Outbox backlog",
                "Are lattice events reaching the webhook service: events waiting, age of the "
                "oldest?",
                (
                    q("sum(catalytic_lattice_outbox_pending)", "pending"),
                    q("max(catalytic_lattice_outbox_oldest_age_seconds)", "oldest age (s)"),
                ),
            ),
            Panel(
                "Outbox publishing",
                "How many events per second are published, and how many publishes fail?",
                (
                    q(
                        "sum(rate(catalytic_lattice_outbox_published_total[" + RATE + "]))",
                        "published",
                    ),
                    q(
                        rate_sum(
                            "catalytic_lattice_outbox_publish_failures_total", "lattice", "code"
                        ),
                        "failed {{code}}",
                        may_be_empty=NO_FAILURE_YET,
                    ),
                ),
                unit="ops",
            ),
        ),
    ),
)

WEBHOOK = _service_dashboard(
    "webhook",
    "Catalytic — webhook",
    "Webhook endpoints and delivery: attempts, the queue, disabled endpoints.",
    Row(
        "Delivery",
        (
            Panel(
                "Delivery attempts by outcome",
                "Are deliveries succeeding, being retried (failed) or given up (dead)?",
                (
                    q(
                        rate_sum("catalytic_webhook_deliveries_total", "webhook", "outcome"),
                        "{{outcome}}",
                    ),
                ),
                unit="ops",
            ),
            Panel(
                "Attempt duration p50 / p95",
                "How long does one delivery attempt take (DNS, connect, TLS, answer)?",
                tuple(
                    q(
                        quantile("catalytic_webhook_attempt_duration_seconds", level, "webhook"),
                        f"p{round(level * 100)}",
                    )
                    for level in (0.5, 0.95)
                ),
                unit="s",
            ),
            Panel(
                "Delivery queue",
                "Is delivery keeping up: deliveries waiting, age of the oldest waiting one?",
                (
                    q("max(catalytic_webhook_queue_depth)", "waiting"),
                    q("max(catalytic_webhook_oldest_pending_age_seconds)", "oldest age (s)"),
                ),
            ),
            Panel(
                "Endpoints disabled and retention",
                "Are endpoints being disabled (gone, failing), and is retention deleting rows?",
                (
                    q(
                        rate_sum("catalytic_webhook_endpoints_disabled_total", "webhook", "reason"),
                        "disabled {{reason}}",
                        may_be_empty=NO_FAILURE_YET,
                    ),
                    q(
                        rate_sum("catalytic_webhook_retention_deleted_total", "webhook", "kind"),
                        "deleted {{kind}}",
                        may_be_empty="retention deletes only rows past WEBHOOK_RETENTION_DAYS",
                    ),
                ),
                unit="ops",
            ),
        ),
    ),
)

_GATEWAY = 'envoy_http_conn_manager_prefix="gateway"'
GATEWAY = Dashboard(
    "catalytic-gateway",
    "Catalytic — gateway (Envoy)",
    "The public REST gateway: what clients get, and how the upstream services answer Envoy.",
    (
        Row(
            "Downstream (clients)",
            (
                Panel(
                    "Responses by class",
                    "What do clients get back: 2xx, 4xx, 5xx per second?",
                    (
                        q(
                            "sum by (envoy_response_code_class) (rate(envoy_http_downstream_rq_xx"
                            f"{{{_GATEWAY}}}[{RATE}]))",
                            "{{envoy_response_code_class}}xx",
                        ),
                    ),
                    unit="reqps",
                ),
                Panel(
                    "Request latency p50 / p95 / p99",
                    "How long do clients wait for an answer from the gateway (ms)?",
                    tuple(
                        q(
                            f"histogram_quantile({level}, sum by (le) (rate("
                            f"envoy_http_downstream_rq_time_bucket{{{_GATEWAY}}}[{RATE}])))",
                            f"p{round(level * 100)}",
                        )
                        for level in (0.5, 0.95, 0.99)
                    ),
                    unit="ms",
                ),
                Panel(
                    "Active connections and requests",
                    "How many client connections and requests are open right now?",
                    (
                        q(f"sum(envoy_http_downstream_cx_active{{{_GATEWAY}}})", "connections"),
                        q(f"sum(envoy_http_downstream_rq_active{{{_GATEWAY}}})", "requests"),
                    ),
                ),
            ),
        ),
        Row(
            "Upstream (services)",
            (
                Panel(
                    "Upstream requests per service",
                    "How many requests does Envoy send to each service?",
                    (
                        q(
                            "sum by (envoy_cluster_name) (rate(envoy_cluster_upstream_rq_total"
                            f'{{envoy_cluster_name=~"auth|lattice|webhook"}}[{RATE}]))',
                            "{{envoy_cluster_name}}",
                        ),
                    ),
                    unit="reqps",
                ),
                Panel(
                    "Upstream latency p95",
                    "How long does each service take to answer Envoy (ms)?",
                    (
                        q(
                            "histogram_quantile(0.95, sum by (le, envoy_cluster_name) (rate("
                            "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=~"
                            f'"auth|lattice|webhook"}}[{RATE}])))',
                            "{{envoy_cluster_name}}",
                        ),
                    ),
                    unit="ms",
                ),
                Panel(
                    "Healthy upstream hosts",
                    "Does Envoy consider each service healthy (active health checks, outlier "
                    "ejections)?",
                    (
                        q(
                            "sum by (envoy_cluster_name) (envoy_cluster_membership_healthy"
                            '{envoy_cluster_name=~"auth|lattice|webhook"})',
                            "healthy {{envoy_cluster_name}}",
                        ),
                        q(
                            "sum by (envoy_cluster_name) (envoy_cluster_outlier_detection_"
                            'ejections_active{envoy_cluster_name=~"auth|lattice|webhook"})',
                            "ejected {{envoy_cluster_name}}",
                        ),
                    ),
                ),
            ),
        ),
    ),
)

_DB = '{datname="catalytic"}'
POSTGRES = Dashboard(
    "catalytic-postgres",
    "Catalytic — PostgreSQL",
    "The system of record, seen by prometheus-postgres-exporter and by the services' pools.",
    (
        Row(
            "Server",
            (
                Panel(
                    "Up and connections",
                    "Is PostgreSQL up, and how many of its max_connections are used?",
                    (
                        q('min(pg_up{job="postgres"})', "up"),
                        q("sum(pg_stat_database_numbackends)", "backends"),
                        q("max(pg_settings_max_connections)", "max_connections"),
                    ),
                ),
                Panel(
                    "Connections by state",
                    "What are the connections doing (active, idle, idle in transaction)?",
                    (
                        q(
                            'sum by (state) (pg_stat_activity_count{datname="catalytic"})',
                            "{{state}}",
                        ),
                    ),
                ),
                Panel(
                    "Transactions per second",
                    "How many transactions commit and roll back per second?",
                    (
                        q(
                            f'sum(rate(pg_stat_database_xact_commit{{datname="catalytic"}}[{RATE}]))',
                            "commits",
                        ),
                        q(
                            f'sum(rate(pg_stat_database_xact_rollback{{datname="catalytic"}}[{RATE}]))',
                            "rollbacks",
                        ),
                    ),
                    unit="ops",
                ),
                Panel(
                    "Buffer cache hit ratio",
                    "Are reads served from shared buffers rather than from disk?",
                    (
                        q(
                            f"sum(rate(pg_stat_database_blks_hit{_DB}[{RATE}])) / "
                            f"(sum(rate(pg_stat_database_blks_hit{_DB}[{RATE}])) + "
                            f"sum(rate(pg_stat_database_blks_read{_DB}[{RATE}])))",
                            "hit ratio",
                        ),
                    ),
                    unit="percentunit",
                ),
                Panel(
                    "Database size and longest transaction",
                    "How large is the database, and is a transaction running for long?",
                    (
                        q('sum(pg_database_size_bytes{datname="catalytic"}) / 1e6', "size (MB)"),
                        q(
                            'max(pg_stat_activity_max_tx_duration{datname="catalytic"})',
                            "longest transaction (s)",
                        ),
                    ),
                ),
                Panel(
                    "Deadlocks and locks",
                    "Are transactions deadlocking, and how many locks are held?",
                    (
                        q(
                            f'sum(rate(pg_stat_database_deadlocks{{datname="catalytic"}}[{RATE}]))',
                            "deadlocks/s",
                        ),
                        q('sum by (mode) (pg_locks_count{datname="catalytic"})', "{{mode}}"),
                    ),
                ),
            ),
        ),
        db_pool(),
    ),
)

REDIS = Dashboard(
    "catalytic-redis",
    "Catalytic — Redis",
    "The shared fast state (denylist, rate limits, caches), seen by prometheus-redis-exporter "
    "and by the services' clients.",
    (
        Row(
            "Server",
            (
                Panel(
                    "Up, clients and keys",
                    "Is Redis up, how many clients are connected, how many keys does it hold?",
                    (
                        q('min(redis_up{job="redis"})', "up"),
                        q("sum(redis_connected_clients)", "clients"),
                        q("sum(redis_db_keys)", "keys"),
                    ),
                ),
                Panel(
                    "Memory used and limit",
                    "How much memory does Redis use, against its maxmemory (0 = no limit)?",
                    (
                        q("sum(redis_memory_used_bytes)", "used"),
                        q("sum(redis_memory_max_bytes)", "maxmemory"),
                    ),
                    unit="bytes",
                ),
                Panel(
                    "Commands per second",
                    "How busy is Redis?",
                    (q(f"sum(rate(redis_commands_processed_total[{RATE}]))", "commands"),),
                    unit="ops",
                ),
                Panel(
                    "Keyspace hits, misses, expiries, evictions",
                    "Do lookups find their keys, and are keys expiring or being evicted?",
                    (
                        q(f"sum(rate(redis_keyspace_hits_total[{RATE}]))", "hits"),
                        q(f"sum(rate(redis_keyspace_misses_total[{RATE}]))", "misses"),
                        q(f"sum(rate(redis_expired_keys_total[{RATE}]))", "expired"),
                        q(f"sum(rate(redis_evicted_keys_total[{RATE}]))", "evicted"),
                    ),
                    unit="ops",
                ),
            ),
        ),
        Row("Clients (the services)", (redis_client(),)),
    ),
)

COMPUTE = Dashboard(
    "catalytic-compute",
    "Catalytic — compute",
    "The lattice service's compute: the CPU worker pool, fair queues, engine time, the GPU.",
    (
        Row(
            "CPU pool",
            (
                Panel(
                    "Workers: live and busy",
                    "Are the compute workers all busy (saturation)?",
                    (
                        q("sum(catalytic_lattice_pool_workers)", "live"),
                        q("sum(catalytic_lattice_pool_busy_workers)", "busy"),
                    ),
                ),
                Panel(
                    "Queue: depth, limit and tenants",
                    "How many jobs wait against COMPUTE_MAX_QUEUE, for how many tenants?",
                    (
                        q("sum(catalytic_lattice_pool_queue_depth)", "waiting"),
                        q("sum(catalytic_lattice_pool_max_queue)", "max queue"),
                        q("sum(catalytic_lattice_pool_tenants)", "tenants"),
                    ),
                ),
                Panel(
                    "Jobs refused by the fair queue",
                    "Are tenants refused for exceeding their share of the queue or their plan?",
                    (
                        q(
                            rate_sum("catalytic_lattice_pool_refusals_total", "lattice", "reason"),
                            "{{reason}}",
                        ),
                    ),
                    unit="ops",
                ),
            ),
        ),
        Row(
            "Engine",
            (
                Panel(
                    "Compute time p95 by operation and device",
                    "How long does the engine take per operation, on CPU and on GPU?",
                    (
                        q(
                            f"histogram_quantile(0.95, sum by (le, op, device) (rate("
                            f"catalytic_lattice_compute_seconds_bucket[{RATE}])))",
                            "{{op}} {{device}}",
                        ),
                    ),
                    unit="s",
                ),
                Panel(
                    "Computations by device",
                    "Where do computations run: cpu, gpu, or none (answered without the engine)?",
                    (
                        q(
                            f"sum by (device) (rate(catalytic_lattice_operations_total[{RATE}]))",
                            "{{device}}",
                        ),
                    ),
                    unit="ops",
                ),
            ),
        ),
        Row(
            "GPU",
            (
                Panel(
                    "GPU memory",
                    "How much GPU memory do live arrays hold, of the device's total?",
                    (
                        q("sum(catalytic_lattice_gpu_memory_bytes)", "used", may_be_empty=GPU_ONLY),
                        q(
                            "sum(catalytic_lattice_gpu_memory_total_bytes)",
                            "total",
                            may_be_empty=GPU_ONLY,
                        ),
                    ),
                    unit="bytes",
                ),
                Panel(
                    "GPU out-of-memory and CPU fallbacks",
                    "Do GPU runs run out of memory, and are they retried on the CPU?",
                    (
                        q(f"sum(rate(catalytic_lattice_gpu_oom_total[{RATE}]))", "OOM/s"),
                        q(
                            rate_sum("catalytic_lattice_gpu_fallbacks_total", "lattice", "reason"),
                            "fallback {{reason}}",
                            may_be_empty=NO_FAILURE_YET,
                        ),
                    ),
                    unit="ops",
                ),
            ),
        ),
    ),
)

DASHBOARDS: tuple[Dashboard, ...] = (
    OVERVIEW,
    AUTH,
    LATTICE,
    WEBHOOK,
    GATEWAY,
    POSTGRES,
    REDIS,
    COMPUTE,
)
