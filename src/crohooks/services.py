"""The long-lived objects of one process, built once from Settings and closed on shutdown."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from crohooks.auth.verifier import TokenVerifier, build_verifier
from crohooks.hooks.service import HookService
from crohooks.settings import Settings
from crohooks.store.database import Database
from crohooks.store.hooks import HookRepository
from crohooks.store.tenants import TenantRepository
from crohooks.store.versions import VersionPinRepository


@dataclass(slots=True)
class Services:
    settings: Settings
    db: Database
    verifier: TokenVerifier
    hooks: HookService
    hook_repository: HookRepository
    tenants: TenantRepository
    version_pins: VersionPinRepository

    @classmethod
    def build(cls, settings: Settings) -> Services:
        db = Database(settings.database_url)
        hook_repository = HookRepository(db)
        return cls(
            settings=settings,
            db=db,
            verifier=build_verifier(settings),
            hooks=HookService(
                hook_repository, secret_grace=timedelta(seconds=settings.secret_grace_seconds)
            ),
            hook_repository=hook_repository,
            tenants=TenantRepository(db),
            version_pins=VersionPinRepository(db),
        )

    async def aclose(self) -> None:
        await self.verifier.aclose()
        await self.db.dispose()
