"""Everything a server process holds: the archive, accounts, the audit trail and jobs."""

from __future__ import annotations

from dataclasses import dataclass

from imagebank.services.accounts import Accounts
from imagebank.services.archive import Archive
from imagebank.services.audit import AuditLog
from imagebank.services.jobs import Jobs


@dataclass
class Runtime:
    archive: Archive
    accounts: Accounts
    audit: AuditLog
    jobs: Jobs

    @classmethod
    def for_archive(cls, archive: Archive) -> Runtime:
        return cls(archive=archive,
                   accounts=Accounts(archive.sessions, archive.settings),
                   audit=AuditLog(archive.sessions, archive.settings),
                   jobs=Jobs(archive))

    def start(self, *, run_jobs: bool = True, requeue: bool = True) -> None:
        self.audit.start()
        if run_jobs:
            self.jobs.start(requeue=requeue)

    def stop(self) -> None:
        self.jobs.stop()
        self.audit.stop()
