"""Chinese and English for every text the core produces: refusal reasons, outbox states.

Machine-readable parts (the refusal's `code` and `rule`) are never translated; the phone
turns them into words here. The rule is the precise reason and is looked up first, then the
closed `code`; a rule this phone does not know yet (a newer server) shows the server's own
`message`, so nothing is ever shown as a bare "failed". The app starts in Chinese.
"""

from __future__ import annotations

DEFAULT_LANG = "zh_CN"
LANGS = ("zh_CN", "en")

# rule or code -> (zh_CN, en)
REASONS: dict[str, tuple[str, str]] = {
    # rules (the REST problem codes)
    "reason_required": ("需要填写原因", "A reason is required"),
    "evidence_required": ("需要整改后的照片", "After-photos are required"),
    "illegal_transition": ("当前状态不允许此操作", "Not allowed in the record's current state"),
    "not_assignee": ("任务已不再指派给您", "The task is no longer assigned to you"),
    "use_task_step": ("任务只能通过任务步骤更改", "A task changes only through its steps"),
    "use_hazard_step": ("隐患状态只能通过处置步骤更改", "A hazard's status changes only by steps"),
    "step_final": ("已提交的步骤不能修改", "A sent step cannot be changed"),
    "submission_final": ("已提交的自查表不能修改", "A submitted self-check cannot be changed"),
    "week_taken": ("本周已提交过自查表", "This week's self-check was already submitted"),
    "not_editable": ("上报后此项不能修改", "This cannot change after the report"),
    "unknown_photo": ("照片未登记到服务器", "The photo is not known to the server"),
    "location_required": ("没有定位", "No position fix"),
    "assignee_required": ("请指定一个整改单位", "Name one organisation to rectify"),
    "being_sent": ("正在发送，稍后再修改", "Being sent: edit it when sending is done"),  # noqa: RUF001
    "invalid": ("内容不符合要求", "The input is not acceptable"),
    "validation_error": ("内容格式有误", "The input is malformed"),
    # closed codes (schemas.sync.Reason)
    "forbidden": ("您没有权限执行此操作", "You are not allowed to do this"),
    "read_only": ("此记录为只读", "This record is read-only"),
    "server_owned": ("此字段由服务器维护", "This field is kept by the server"),
    "invalid_value": ("内容不符合要求", "A value is not acceptable"),
    "unknown_entity": ("服务器不认识此类记录", "The server does not know this kind of record"),
    "unknown_field": ("服务器不认识此字段", "The server does not know this field"),
    "not_found": ("记录不存在或您无权查看", "Not found, or not yours to see"),
    "not_deletable": ("此记录不能删除", "This record cannot be deleted"),
    "rule": ("不符合业务规则", "Refused by a business rule"),
    # photo refusals (docs/media.md)
    "unsupported_type": ("不支持的图片格式", "Unsupported image type"),
    "type_mismatch": ("图片类型与内容不符", "The image type does not match its content"),
    "too_large": ("图片太大", "The image is too large"),
    "too_many_pixels": ("图片像素太多", "The image has too many pixels"),
    "corrupt": ("图片已损坏", "The image is damaged"),
    "sha256_mismatch": ("图片传输出错", "The photo arrived damaged"),
}

STATES: dict[str, tuple[str, str]] = {
    "waiting": ("等待发送", "Waiting"),
    "sending": ("正在发送", "Sending"),
    "sent": ("已发送", "Sent"),
    "refused": ("被拒绝", "Refused"),
    "photos": ("照片 {done}/{total} 已发送", "{done} of {total} photos sent"),
    "unsent_kept": (
        "{n} 条未发送的记录保留在手机上，下次登录时发送",  # noqa: RUF001
        "{n} unsent items stay on the phone and are sent at your next sign-in",
    ),
}


def _pick(pair: tuple[str, str], lang: str) -> str:
    return pair[1] if lang == "en" else pair[0]


def reason(rule: str | None, code: str | None, message: str = "", lang: str = DEFAULT_LANG) -> str:
    """Words for a refusal: by `rule`; a rule this phone does not know yet (a newer server)
    shows the `code`'s words followed by the server's `message`."""
    if rule and rule in REASONS:
        return _pick(REASONS[rule], lang)
    general = _pick(REASONS.get(code or "", REASONS["rule"]), lang)
    return f"{general}: {message}" if message else general


def text(key: str, lang: str = DEFAULT_LANG, **values: object) -> str:
    """A state or message of the core in `lang`, with `{placeholders}` filled."""
    return _pick(STATES[key], lang).format(**values)
