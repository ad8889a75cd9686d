"""The worker's periodic jobs, declared once: what runs, how often, and whether it runs as soon
as the worker starts. Each job picks its tenants and takes a per-tenant lease
(``app.jobs.tenant_jobs``), so any number of worker processes may run the same schedule.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from app.config import Settings
from app.jobs import deliveries
from app.jobs.tenant_jobs import (
    deliver_tenants,
    lifecycle_tenants,
    pull_tenants,
    push_tenants,
    requested_scoring,
    score_tenants,
)
from app.services import Services
from app.sync import lifecycle
from app.tracking.rate_limit import forget_ingest_windows
from connectors import registry

REQUESTED_INTERVAL = dt.timedelta(seconds=2)
# How often due trigger deliveries are sent (and failed ones retried when their time comes).
DELIVERY_INTERVAL = dt.timedelta(seconds=15)
PURGE_INTERVAL = dt.timedelta(hours=1)


@dataclass(frozen=True)
class PeriodicJob:
    name: str
    interval: Callable[[Settings], dt.timedelta]
    run: Callable[[Services, str], object]  # (services, this worker's identity)
    at_start: bool = True


def _push(services: Services, tenant_id: int) -> None:
    """The CRM push that follows a tenant's scoring pass (tenants connected to a CRM)."""
    if lifecycle.provider_of(services, tenant_id) is not None:
        lifecycle.sync_tenant(services, tenant_id)


def score(services: Services, holder: str) -> object:
    """Scoring only: the CRM push is its own job, so a sync waiting on a CRM never makes the
    scheduler skip a scoring round."""
    return score_tenants(services.db, services.clock, holder)


def push(services: Services, holder: str) -> object:
    return push_tenants(
        services.db,
        services.clock,
        holder,
        lambda tenant_id: _push(services, tenant_id),
        tuple(registry.keys()),
    )


def requested(services: Services, holder: str) -> object:
    return requested_scoring(services.db, services.clock, holder)


def pull(services: Services, holder: str) -> object:
    return pull_tenants(
        services.db,
        services.clock,
        holder,
        lambda tenant_id: lifecycle.pull_tenant(services, tenant_id),
    )


def deliver(services: Services, holder: str) -> object:
    """Send each tenant's due trigger deliveries; CRM actions get its connector when needed."""

    def one_tenant(tenant_id: int, now: dt.datetime) -> None:
        factory = None
        if lifecycle.provider_of(services, tenant_id) is not None:

            def factory():
                return lifecycle.connector_for(services, tenant_id)

        deliveries.deliver_pending(
            services.db,
            tenant_id,
            now,
            connector_factory=factory,
            allow_loopback=not services.settings.is_production,
            cipher=services.token_cipher,
        )

    return deliver_tenants(services.db, services.clock, holder, one_tenant)


def read_lifecycle(services: Services, holder: str) -> object:
    """Installs and uninstalls the CRMs report (HubSpot's webhooks journal)."""
    return lifecycle_tenants(
        services.db,
        services.clock,
        holder,
        lambda tenant_id, now: lifecycle.read_lifecycle(services, tenant_id, now),
    )


def purge(services: Services, holder: str) -> object:
    """Tenants whose authorisation has been lost too long are uninstalled; tenants uninstalled
    longer than the grace period are deleted; spent ingestion windows are forgotten."""
    now = services.clock()
    settings = services.settings
    lifecycle.uninstall_lost_authorisations(
        services, now, dt.timedelta(days=settings.reauth_grace_days)
    )
    grace = dt.timedelta(days=settings.uninstall_grace_days)
    purged = lifecycle.purge_uninstalled(services.db, now, grace)
    forget_ingest_windows(services.db, now)
    return purged


SCHEDULE: tuple[PeriodicJob, ...] = (
    PeriodicJob("score", lambda s: dt.timedelta(seconds=s.scoring_interval_seconds), score),
    PeriodicJob("push", lambda s: dt.timedelta(seconds=s.scoring_interval_seconds), push),
    # Passes and previews admins asked for: picked up within seconds.
    PeriodicJob("requested", lambda s: REQUESTED_INTERVAL, requested),
    PeriodicJob("pull", lambda s: dt.timedelta(seconds=s.pull_interval_seconds), pull),
    PeriodicJob("deliver", lambda s: DELIVERY_INTERVAL, deliver),
    PeriodicJob(
        "lifecycle", lambda s: dt.timedelta(seconds=s.pull_interval_seconds), read_lifecycle
    ),
    PeriodicJob("purge", lambda s: PURGE_INTERVAL, purge, at_start=False),
)
