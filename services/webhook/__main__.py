"""Entry point: `python -m services.webhook`."""

from __future__ import annotations

import logging

from services.common.logs import configure_logging
from services.common.metrics_http import start_metrics_server
from services.common.server import run_service, serve_until_signal
from services.webhook.config import WebhookConfig
from services.webhook.server import create_server


async def main() -> None:
    config = WebhookConfig.from_env()
    configure_logging(config.service.log_level, config.service.log_format, service="webhook")
    start_metrics_server(config.service.bind_host, config.service.metrics_port)
    running = await create_server(config)
    await running.set_serving()
    logging.getLogger("catalytic.webhook").info("webhook service ready on port %d", running.port)
    await serve_until_signal(running, config.service.shutdown_grace_s)


if __name__ == "__main__":
    run_service(main)
