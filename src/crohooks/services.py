"""The long-lived objects of one process, built once from Settings and closed on shutdown."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from crohooks.admission import Admission, DatabaseAdmission, LocalAdmission
from crohooks.auth.verifier import TokenVerifier, build_verifier
from crohooks.delivery.body import render_delivery_body
from crohooks.delivery.insights import HookInsights
from crohooks.delivery.intake import EventIntake, judge_event
from crohooks.delivery.log import DeliveryLog
from crohooks.delivery.outbound import OutboundClient
from crohooks.hooks.ping import PingService
from crohooks.hooks.service import HookService
from crohooks.hooks.settings import HookSettingsService
from crohooks.portal.access import PortalAccess
from crohooks.ratelimit import DatabaseRateLimiter, MemoryRateLimiter, RateLimiter
from crohooks.settings import Settings
from crohooks.store.connect import open_database
from crohooks.store.connector import Database, DatabaseLimits
from crohooks.store.deliveries import DeliveryRepository
from crohooks.store.hook_settings import HookSettingsRepository
from crohooks.store.hooks import HookRepository
from crohooks.store.housekeeping import Housekeeping
from crohooks.store.insights import Insights
from crohooks.store.intake import Intake
from crohooks.store.portal import PortalRepository
from crohooks.store.queue import DeliveryQueue
from crohooks.store.ratelimits import RateLimitCounters
from crohooks.store.tenants import TenantRepository
from crohooks.store.versions import VersionPinRepository


@dataclass(slots=True)
class Services:
    settings: Settings
    db: Database
    verifier: TokenVerifier
    hooks: HookService
    hook_settings: HookSettingsService
    tenants: TenantRepository
    version_pins: VersionPinRepository
    queue: DeliveryQueue
    housekeeping: Housekeeping
    outbound: OutboundClient
    ping: PingService
    intake: EventIntake
    delivery_log: DeliveryLog
    rate_limiter: RateLimiter
    admission: Admission
    insights: HookInsights
    portal: PortalAccess

    @classmethod
    def build(cls, settings: Settings) -> Services:
        db = open_database(settings.database_url, DatabaseLimits.of(settings))
        hooks = HookService.configured(HookRepository(db), settings)
        hook_settings = HookSettingsRepository(db)
        deliveries = DeliveryRepository(db)
        outbound = OutboundClient(settings)
        pins = VersionPinRepository(db)
        rate_limiter: RateLimiter
        admission: Admission
        if db.dialect == "sqlite":
            rate_limiter = MemoryRateLimiter()
            admission = LocalAdmission(pins, rate_limiter)
        else:
            counters = RateLimitCounters(db)
            rate_limiter = DatabaseRateLimiter(counters)
            admission = DatabaseAdmission(pins, counters)
        return cls(
            settings=settings,
            db=db,
            verifier=build_verifier(settings),
            hooks=hooks,
            hook_settings=HookSettingsService(hook_settings),
            tenants=TenantRepository(db),
            version_pins=pins,
            queue=DeliveryQueue(db),
            housekeeping=Housekeeping(db),
            outbound=outbound,
            ping=PingService(
                hooks, hook_settings, deliveries, outbound, timeout=settings.ping_timeout
            ),
            intake=EventIntake(Intake(db, render_delivery_body, judge_event)),
            delivery_log=DeliveryLog(hooks, deliveries),
            rate_limiter=rate_limiter,
            admission=admission,
            insights=HookInsights(hooks, Insights(db)),
            portal=PortalAccess(
                PortalRepository(db),
                session_lifetime=timedelta(seconds=settings.portal_session_seconds),
            ),
        )

    async def aclose(self) -> None:
        await self.outbound.aclose()
        await self.verifier.aclose()
        await self.db.dispose()
