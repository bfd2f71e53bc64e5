"""The outbox you can see, and "send now".

Every queued item is listed with its state: `waiting` (queued), `sending` (in the push under
way; it cannot be edited until the answer is in), `sent` (the server took it; kept in a short
history), `refused` (the server's `rule` and `message`, translated, and the record shown again
as the server has it). Photos of a record are counted separately: "2 of 3 photos sent".
Nothing leaves the queue before the server answered it (`sync.store.ClientStore` promises that;
this module only reads the queue and the log).

`Sender.send_now` is one round, in the order the server needs: declare new photos by hash
(records may name them before their bytes arrive), push and pull, then upload the photos'
bytes with tus.
"""

from __future__ import annotations

import asyncio
import enum
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec

from mobile.core import i18n
from mobile.core.clock import Now, rfc3339, utcnow
from mobile.core.photos import PhotoState, PhotoStore
from mobile.core.tus_client import TusUploader, UploadInterruptedError, UploadResult
from sync.client import SyncClient, SyncResult, TransportError
from sync.store import ClientStore

_dec = msgspec.json.Decoder()
_enc = msgspec.json.Encoder()


class ItemState(enum.StrEnum):
    """An outbox item's state."""

    WAITING = "waiting"
    SENDING = "sending"
    SENT = "sent"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One queued write as the outbox screen shows it."""

    seq: int
    entity: str
    record_id: uuid.UUID
    op: str
    fields: dict[str, Any]
    state: ItemState
    photos_done: int = 0
    photos_total: int = 0
    code: str | None = None  # the refusal's closed code
    rule: str | None = None  # the refusal's rule (the precise reason)
    message: str | None = None  # the server's own words

    def reason(self, lang: str = i18n.DEFAULT_LANG) -> str | None:
        """The refusal in the user's language (None unless refused)."""
        if self.state is not ItemState.REFUSED:
            return None
        return i18n.reason(self.rule, self.code, self.message or "", lang)

    def state_text(self, lang: str = i18n.DEFAULT_LANG) -> str:
        """The state in the user's language, with the photo count when there are photos."""
        words = i18n.text(str(self.state), lang)
        if self.photos_total:
            photos = i18n.count_text(
                "photos", self.photos_total, lang, done=self.photos_done, total=self.photos_total
            )
            return f"{words} · {photos}"
        return words


class Outbox:
    """Reads the queue (the store's outbox and log, the core's sent history and photos)."""

    def __init__(self, store: ClientStore, photos: PhotoStore) -> None:
        self.store = store
        self.photos = photos
        self.db = photos.db  # the core's connection to the same file
        self._sending: set[int] = set()
        self._sending_records: set[tuple[str, uuid.UUID]] = set()

    # -- in flight --------------------------------------------------------------------------
    def mark_sending(self, seqs: dict[int, tuple[str, uuid.UUID]]) -> None:
        """The push under way carries these items (seq -> record)."""
        self._sending = set(seqs)
        self._sending_records = set(seqs.values())

    def clear_sending(self) -> None:
        """The push is answered (or failed)."""
        self._sending.clear()
        self._sending_records.clear()

    def is_sending(self, entity: str, record_id: uuid.UUID) -> bool:
        """True while a write of this record is in a push: it must not be edited now."""
        return (entity, record_id) in self._sending_records

    # -- listing ----------------------------------------------------------------------------
    def items(self) -> list[OutboxItem]:
        """Every item: queued and in flight, then refused and sent ones, newest last."""
        progress = self.photos.all_progress()
        out: list[OutboxItem] = []

        def photos(entity: str, rid: uuid.UUID) -> tuple[int, int]:
            return progress.get((entity, str(rid)), (0, 0))

        for seq, entity, rid, op, blob, state in self.db.execute(
            "SELECT seq, entity, id, op, fields, state FROM outbox ORDER BY seq"
        ):
            uid = uuid.UUID(bytes=rid)
            if state == "acked":
                st = ItemState.SENT
            elif seq in self._sending:
                st = ItemState.SENDING
            else:
                st = ItemState.WAITING
            done, total = photos(entity, uid)
            out.append(OutboxItem(seq, entity, uid, op, _dec.decode(blob), st, done, total))
        queued = {i.seq for i in out}
        for seq, entity, rid, op, blob, _status, _at in self.db.execute(
            "SELECT seq, entity, id, op, fields, status, at FROM mobile_sent ORDER BY seq"
        ):
            if seq in queued:
                continue
            uid = uuid.UUID(rid)
            done, total = photos(entity, uid)
            out.append(
                OutboxItem(seq, entity, uid, op, _dec.decode(blob), ItemState.SENT, done, total)
            )
        for e in self.store.log_entries("refused"):
            detail = e.detail or {}
            rid_ = e.id or uuid.UUID(int=0)
            done, total = photos(str(e.entity), rid_)
            out.append(
                OutboxItem(
                    e.seq or 0,
                    str(e.entity),
                    rid_,
                    str(detail.get("op", "")),
                    dict(detail.get("fields") or {}),
                    ItemState.REFUSED,
                    done,
                    total,
                    code=e.code,
                    rule=detail.get("rule") or None,
                    message=e.message,
                )
            )
        out.sort(key=lambda i: i.seq)
        return out

    def counts(self) -> dict[ItemState, int]:
        """How many items are in each state."""
        counts = dict.fromkeys(ItemState, 0)
        for i in self.items():
            counts[i.state] += 1
        return counts

    def remember_sent(
        self, sent: list[tuple[int, str, uuid.UUID, str, dict[str, Any]]], now: Now = utcnow
    ) -> None:
        """Keep items the server took in the history (the store drops them after a pull)."""
        at = rfc3339(now())
        self.db.executemany(
            "INSERT OR IGNORE INTO mobile_sent(seq, entity, id, op, fields, status, at)"
            " VALUES(?,?,?,?,?,'sent',?)",
            [(s, e, str(r), op, _enc.encode(f), at) for s, e, r, op, f in sent],
        )


@dataclass(slots=True)
class SendReport:
    """What one `send_now` did."""

    declared: int = 0
    sync: SyncResult | None = None
    uploads: list[UploadResult] = field(default_factory=list)
    error: str | None = None  # the network failed somewhere; the rest waits for the next round
    retry_after_s: float | None = None  # the server shed a request and said when to come back

    @property
    def ok(self) -> bool:
        """True when the whole round went through."""
        return self.error is None


class Sender:
    """One "send now" round over the sync client and the photo uploader."""

    def __init__(
        self,
        outbox: Outbox,
        client: SyncClient,
        uploader: TusUploader,
        http: httpx.Client,
        base_url: str,
        token: Any,
        *,
        now: Now = utcnow,
    ) -> None:
        self.outbox = outbox
        self.client = client
        self.uploader = uploader
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.token = token
        self._now = now

    async def send_now(self) -> SendReport:
        """Declare photos, push and pull, upload photos. A network failure stops the round
        and is reported (nothing is lost; the next round continues where this one stopped)."""
        report = SendReport()
        store = self.outbox.store
        try:
            # Declare until no photo is left undeclared: a record (and its photo) written
            # while a declare ran in its thread would otherwise be pushed naming a photo the
            # server does not know (refused unknown_photo). The check and the push's reading of
            # the queue follow each other on this loop with no await between them.
            photos = self.outbox.photos
            while True:
                tried = {p.sha256 for p in photos.all(PhotoState.LOCAL)}
                report.declared += await asyncio.to_thread(
                    photos.declare, self.http, self.base_url, self.token()
                )
                if {p.sha256 for p in photos.all(PhotoState.LOCAL)} <= tried:
                    break  # nothing new (a photo the server refused stays local: not retried)
        except (httpx.HTTPError, TransportError) as exc:
            report.error = f"declare: {exc!r}"
            report.retry_after_s = getattr(exc, "retry_after_s", None)
            return report
        # A write queued while a declare ran may name a photo id the server just replaced
        # (same bytes known already): rewrite it before the push reads the queue (no await
        # between them, and actions run on this loop).
        photos.settle_renames()
        batch = store.pending()
        self.outbox.mark_sending({m.seq: (m.entity, m.id) for m in batch})
        try:
            report.sync = await self.client.sync_once()
        except (TransportError, OSError) as exc:
            report.error = f"sync: {exc!r}"
            report.retry_after_s = getattr(exc, "retry_after_s", None)
        finally:
            self.outbox.clear_sending()
        left = {m.seq for m in store.pending()}
        refused = {e.seq for e in store.log_entries("refused")}
        self.outbox.remember_sent(
            [
                (m.seq, m.entity, m.id, m.op.value, m.fields)
                for m in batch
                if m.seq not in left and m.seq not in refused
            ],
            self._now,
        )
        if report.error is not None:
            return report
        try:
            report.uploads = await asyncio.to_thread(self.uploader.upload_all)
        except UploadInterruptedError as exc:
            report.error = f"upload: {exc}"
            report.retry_after_s = exc.retry_after_s
        return report
