"""Demo data around Huangpu District, Shanghai (boundaries are simplified rectangles).

A command centre (the warning authority; its duty chief approves orange and red warnings),
seven linked units (two fire, two EMS), two grids with an inspector each, an
enterprise with its safety officer, shelters, a supply depot, a rescue team, contacts (the duty
lines of the command centre and of police 110, fire 119 and EMS 120, and two people), a weekly
check template, an emergency plan, one user per role. Loading twice changes nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.alerts import (
    AlertColor,
    AlertDraft,
    Category,
    EnglishText,
    MsgType,
    ResponseType,
)
from schemas.common import Point, Polygon, Role
from schemas.reference import (
    AdminAreaCreate,
    AreaLevel,
    ContactCreate,
    ContactKind,
    GridCreate,
    OrganisationCreate,
    OrgKind,
    ResourceCreate,
    ResourceKind,
    UnitKind,
)
from server import changes, geo
from server.auth.passwords import hash_password
from server.auth.principal import Principal
from server.config import Settings
from server.domain.alerts import services as alerts
from server.domain.reference import services as ref
from server.models import (
    Alert,
    AlertAuthority,
    CheckItem,
    CheckTemplate,
    EmergencyPlan,
    Enterprise,
    User,
    utcnow,
)

NS = uuid.UUID("6f1d3c1e-1c8b-4d7e-9a55-2a2f4b0c9e01")


def did(name: str) -> uuid.UUID:
    """Stable ids for demo records, so tests and docs can name them."""
    return uuid.uuid5(NS, name)


def rect(w: float, s: float, e: float, n: float) -> Polygon:
    """A closed rectangular ring."""
    return Polygon(coordinates=[[(w, s), (e, s), (e, n), (w, n), (w, s)]])


DEMO_USERS = (
    ("admin", "系统管理员 Admin", Role.ADMIN, None),
    ("dispatcher", "指挥员 Dispatcher", Role.DISPATCHER, "org:command"),
    ("chief", "值班领导 Duty chief (approves warnings)", Role.DISPATCHER, "org:command"),
    ("police1", "民警 Police 1", Role.RESPONDER, "org:police"),
    ("fire1", "消防员 Firefighter 1", Role.RESPONDER, "org:fire"),
    ("ems1", "急救员 EMS 1", Role.RESPONDER, "org:ems"),
    ("power1", "电力抢修 Power 1", Role.RESPONDER, "org:power"),
    ("gas1", "燃气抢修 Gas 1", Role.RESPONDER, "org:gas"),
    ("fire2", "消防员 Firefighter 2 (Dapuqiao)", Role.RESPONDER, "org:fire2"),
    ("ems2", "急救员 EMS 2 (Laoximen)", Role.RESPONDER, "org:ems2"),
    ("inspector1", "网格员 Inspector 1", Role.INSPECTOR, "org:grid_office"),
    ("inspector2", "网格员 Inspector 2", Role.INSPECTOR, "org:grid_office"),
    ("enterprise1", "企业安全员 Safety officer", Role.ENTERPRISE_STAFF, "org:enterprise"),
)


DEMO_CAP_SENDER = "huangpu.emergency@liandong.invalid"


@dataclass(frozen=True)
class DemoSummary:
    """What seed-demo did."""

    created: bool
    users: tuple[str, ...]


async def seed(
    session: AsyncSession, password: str, settings: Settings | None = None
) -> DemoSummary:
    """Load the demo data unless it is already there (`settings`: how warnings are signed)."""
    users = tuple(u[0] for u in DEMO_USERS)
    if (await session.execute(select(User.id).where(User.username == "admin"))).first():
        return DemoSummary(created=False, users=users)

    root = Principal(
        user_id=did("user:admin"),
        username="admin",
        role=Role.ADMIN,
        org_id=None,
        area_id=None,
        session_id=uuid.UUID(int=0),
        device_id="seed-demo",
    )
    city = await ref.create_area(
        session,
        root,
        AdminAreaCreate(
            id=did("area:shanghai"),
            name="上海市 Shanghai",
            code="310000",
            level=AreaLevel.CITY,
            boundary=rect(120.85, 30.68, 122.0, 31.88),
        ),
    )
    district = await ref.create_area(
        session,
        root,
        AdminAreaCreate(
            id=did("area:huangpu"),
            name="黄浦区 Huangpu",
            code="310101",
            level=AreaLevel.DISTRICT,
            parent_id=city.id,
            boundary=rect(121.460, 31.195, 121.512, 31.250),
        ),
    )
    streets = {
        "nanjingdong": (
            "南京东路街道 Nanjing Rd E",
            "310101002",
            (121.470, 31.228, 121.505, 31.248),
        ),
        "yuyuan": ("豫园街道 Yuyuan", "310101013", (121.480, 31.215, 121.505, 31.228)),
    }
    for key, (name, code, box) in streets.items():
        await ref.create_area(
            session,
            root,
            AdminAreaCreate(
                id=did(f"area:{key}"),
                name=name,
                code=code,
                level=AreaLevel.STREET,
                parent_id=district.id,
                boundary=rect(*box),
            ),
        )
    await ref.create_area(
        session,
        root,
        AdminAreaCreate(
            id=did("area:guizhoulu"),
            name="贵州路社区 Guizhou Rd",
            code="310101002001",
            level=AreaLevel.COMMUNITY,
            parent_id=did("area:nanjingdong"),
            boundary=rect(121.470, 31.235, 121.4875, 31.248),
        ),
    )

    orgs = {
        "command": (
            "黄浦区应急联动指挥中心 Command Centre",
            OrgKind.COMMAND_CENTRE,
            None,
            (121.4848, 31.2317),
            "12345",
        ),
        "police": (
            "黄浦公安分局 Police 110",
            OrgKind.LINKED_UNIT,
            UnitKind.POLICE,
            (121.4823, 31.2335),
            "110",
        ),
        "fire": (
            "黄浦消防救援支队 Fire 119",
            OrgKind.LINKED_UNIT,
            UnitKind.FIRE,
            (121.4760, 31.2280),
            "119",
        ),
        "ems": (
            "黄浦区急救站 EMS 120",
            OrgKind.LINKED_UNIT,
            UnitKind.EMS,
            (121.4905, 31.2210),
            "120",
        ),
        # A second fire and EMS unit farther from the northern grids, so "nearest" means something.
        "fire2": (
            "大浦桥消防救援站 Fire 119 (Dapuqiao)",
            OrgKind.LINKED_UNIT,
            UnitKind.FIRE,
            (121.5050, 31.2010),
            "119",
        ),
        "ems2": (
            "老西门急救分站 EMS 120 (Laoximen)",
            OrgKind.LINKED_UNIT,
            UnitKind.EMS,
            (121.4650, 31.2450),
            "120",
        ),
        "power": (
            "黄浦供电抢修 Power",
            OrgKind.LINKED_UNIT,
            UnitKind.POWER,
            (121.4700, 31.2150),
            "95598",
        ),
        "gas": (
            "黄浦燃气抢修 Gas",
            OrgKind.LINKED_UNIT,
            UnitKind.GAS,
            (121.4950, 31.2400),
            "962777",
        ),
        "grid_office": (
            "南京东路网格办 Grid Office",
            OrgKind.GRID_OFFICE,
            None,
            (121.4850, 31.2380),
            None,
        ),
        "enterprise": (
            "外滩商业综合体有限公司 Bund Mall Co.",
            OrgKind.ENTERPRISE,
            None,
            (121.4860, 31.2385),
            None,
        ),
    }
    for key, (name, kind, unit_kind, (lon, lat), phone) in orgs.items():
        await ref.create_org(
            session,
            root,
            OrganisationCreate(
                id=did(f"org:{key}"),
                name=name,
                kind=kind,
                unit_kind=unit_kind,
                area_id=district.id,
                location=Point(coordinates=(lon, lat)),
                phone=phone,
            ),
        )

    hashed = hash_password(password)
    for username, display, role, org in DEMO_USERS:
        session.add(
            User(
                id=did(f"user:{username}"),
                username=username,
                display_name=display,
                password_hash=hashed,
                role=role.value,
                org_id=did(org) if org else None,
                area_id=district.id if role is Role.DISPATCHER else None,
            )
        )
    await session.flush()
    # The command centre sends public warnings; the duty chief approves orange and red ones.
    session.add(
        AlertAuthority(
            org_id=did("org:command"),
            sender=DEMO_CAP_SENDER,
            name="黄浦区应急管理局 (演示)",
            name_en="Huangpu District Emergency Management Bureau (demo)",
            web="https://liandong.invalid/warnings",
            contact="12345",
            approval_colors=[],
            approver_ids=[str(did("user:chief"))],
        )
    )
    await session.flush()

    grids = {
        "A": (
            "南京东路第一网格 Grid A",
            "HP-NJD-01",
            (121.475, 31.232, 121.490, 31.244),
            "inspector1",
        ),
        "B": ("豫园第一网格 Grid B", "HP-YY-01", (121.482, 31.217, 121.500, 31.227), "inspector2"),
    }
    for key, (name, code, box, inspector) in grids.items():
        await ref.create_grid(
            session,
            root,
            GridCreate(
                id=did(f"grid:{key}"),
                name=name,
                code=code,
                boundary=rect(*box),
                inspector_id=did(f"user:{inspector}"),
            ),
        )

    session.add(
        Enterprise(
            id=did("enterprise:bund-mall"),
            name="外滩商业综合体 Bund Mall",
            org_id=did("org:enterprise"),
            grid_id=did("grid:A"),
            area_id=did("area:guizhoulu"),
            location=geo.point_to_db(Point(coordinates=(121.4860, 31.2385))),
            address="上海市黄浦区南京东路 (demo)",
        )
    )

    resources = [
        (
            "shelter:peoples-square",
            ResourceKind.SHELTER,
            "人民广场应急避难场所 People's Square shelter",
            (121.4737, 31.2304),
            20000,
            "人民广场管理处",
            "021-63272222",
        ),
        (
            "shelter:fuxing-park",
            ResourceKind.SHELTER,
            "复兴公园应急避难场所 Fuxing Park shelter",
            (121.4680, 31.2170),
            8000,
            "复兴公园管理处",
            "021-53861069",
        ),
        (
            "depot:huangpu",
            ResourceKind.DEPOT,
            "黄浦区应急物资储备库 Supply depot",
            (121.4985, 31.2105),
            None,
            "区应急管理局",
            "021-33134800",
        ),
        (
            "team:rescue",
            ResourceKind.TEAM,
            "黄浦区综合应急救援队 Rescue team",
            (121.4890, 31.2265),
            60,
            "救援队值班室",
            "021-63200000",
        ),
    ]
    for key, rkind, name, (lon, lat), capacity, contact, phone in resources:
        await ref.create_resource(
            session,
            root,
            ResourceCreate(
                id=did(key),
                kind=rkind,
                name=name,
                location=Point(coordinates=(lon, lat)),
                capacity=capacity,
                contact_name=contact,
                phone=phone,
            ),
        )

    huangpu = [district.id]
    contacts = [
        # key, kind, name, English name, phone, org, user, role title, areas, duty
        (
            "contact:command-duty",
            ContactKind.ORG_DUTY,
            "黄浦区应急联动指挥中心值班室",
            "Command Centre duty desk",
            "021-63210000",
            "org:command",
            None,
            "值班室 Duty desk",
            huangpu,
        ),
        (
            "contact:police-duty",
            ContactKind.UNIT_DUTY,
            "黄浦公安分局指挥室",
            "Huangpu Police 110 duty desk",
            "021-63210110",
            "org:police",
            None,
            "值班室 Duty desk",
            huangpu,
        ),
        (
            "contact:fire-duty",
            ContactKind.UNIT_DUTY,
            "黄浦消防救援支队值班室",
            "Huangpu Fire 119 duty desk",
            "021-63210119",
            "org:fire",
            None,
            "值班室 Duty desk",
            huangpu,
        ),
        (
            "contact:ems-duty",
            ContactKind.UNIT_DUTY,
            "黄浦区急救站调度室",
            "Huangpu EMS 120 dispatch desk",
            "021-63210120",
            "org:ems",
            None,
            "调度室 Dispatch desk",
            huangpu,
        ),
        (
            "contact:zhang-wei",
            ContactKind.PERSON,
            "张伟",
            "Zhang Wei",
            "13800000001",
            "org:command",
            "user:dispatcher",
            "值班指挥长 Duty commander",
            huangpu,
        ),
        (
            "contact:li-na",
            ContactKind.PERSON,
            "李娜",
            "Li Na",
            "13800000002",
            "org:grid_office",
            "user:inspector1",
            "网格员 Grid inspector",
            [did("area:guizhoulu")],
        ),
    ]
    for key, ckind, cname, name_en, phone, org, user, title, areas in contacts:
        await ref.create_contact(
            session,
            root,
            ContactCreate(
                id=did(key),
                kind=ckind,
                name=cname,
                name_en=name_en,
                phone=phone,
                org_id=did(org),
                user_id=did(user) if user else None,
                role_title=title,
                area_ids=areas,
                duty=ckind is not ContactKind.PERSON,
                notes="演示数据 demo data",
            ),
        )

    template = CheckTemplate(
        id=did("check:weekly"),
        code="weekly-safety",
        version=1,
        name="安全周检查表 Weekly safety check",
    )
    session.add(template)
    await session.flush()
    changes.record(session, template)
    items = [
        ("消防通道畅通 Fire exits clear", "fire"),
        ("灭火器在有效期内 Extinguishers in date", "fire"),
        ("电气线路无私拉乱接 No improvised wiring", "electrical"),
        ("燃气管道无泄漏 No gas leaks", "gas"),
        ("应急照明正常 Emergency lighting works", "electrical"),
    ]
    plan = EmergencyPlan(
        id=did("plan:hazmat-leak-ii"),
        code="hazmat-leak-ii",
        version=1,
        name="危险化学品泄漏应急预案 (II级及以上) Hazmat leak, level II and above",
        incident_type="hazmat_leak",
        min_level=2,
        templates=[
            {
                "key": "fire",
                "unit_kind": "fire",
                "title": "危化品泄漏处置 Contain the leak",
                "instructions": "堵漏、稀释、设置警戒区 Plug, dilute, set the hot zone",
                "priority": "urgent",
                "deadline_offset_s": 1800,
                "required_count": 1,
                "reassign_on_decline": True,
            },
            {
                "key": "ems",
                "unit_kind": "ems",
                "title": "现场医疗救护 Treat casualties",
                "priority": "urgent",
                "deadline_offset_s": 1800,
                "required_count": 1,
                "reassign_on_decline": True,
            },
            {
                "key": "police",
                "unit_kind": "police",
                "title": "警戒疏散 Cordon and evacuate",
                "priority": "high",
                "deadline_offset_s": 1800,
                "required_count": 1,
                "reassign_on_decline": True,
            },
        ],
        created_by=root.user_id,
    )
    session.add(plan)
    for pos, (text, category) in enumerate(items, start=1):
        session.add(
            CheckItem(
                id=did(f"check:weekly:{pos}"),
                template_id=template.id,
                position=pos,
                text=text,
                category=category,
            )
        )
    await session.flush()
    changes.record(session, plan)
    await _warnings(session, settings)
    return DemoSummary(created=True, users=users)


def _as(username: str, role: Role) -> Principal:
    return Principal(
        user_id=did(f"user:{username}"),
        username=username,
        role=role,
        org_id=did("org:command"),
        area_id=did("area:huangpu"),
        session_id=uuid.UUID(int=0),
        device_id="seed-demo",
    )


async def _warnings(session: AsyncSession, settings: Settings | None) -> None:
    """A current bilingual warning for part of the district, and an earlier warning that was
    updated and then cancelled (so `make run` shows the public feed at work)."""
    dispatcher, chief = _as("dispatcher", Role.DISPATCHER), _as("chief", Role.DISPATCHER)
    soon = utcnow() + timedelta(days=7)

    async def issue(draft: AlertDraft, approver: Principal = dispatcher) -> Alert:
        """Draft a warning as the dispatcher and publish it (orange and red: by `approver`)."""
        row, _, _ = await alerts.create_draft(session, dispatcher, draft)
        await alerts.publish(session, approver, settings, row)
        return row

    await issue(
        AlertDraft(
            id=did("alert:gale"),
            color=AlertColor.YELLOW,
            category=[Category.MET],
            response_type=[ResponseType.PREPARE],
            event="大风",
            headline="大风黄色预警",
            description="受冷空气影响，预计未来24小时内黄浦江沿岸将出现8级以上阵风。",  # noqa: RUF001
            instruction="加固户外广告牌和临时搭建物，滨江步道暂停开放，注意高空坠物。",  # noqa: RUF001
            area_desc="黄浦区外滩沿线",
            expires=soon,
            area=rect(121.484, 31.228, 121.498, 31.246),
            en=EnglishText(
                event="Gale",
                headline="Yellow gale warning",
                description="Gusts of force 8 or more expected along the Huangpu River "
                "within 24 hours.",
                instruction="Secure outdoor signs and temporary structures; the riverside "
                "walk is closed; beware of falling objects.",
                area_desc="The Bund, Huangpu District",
            ),
        )
    )
    storm = await issue(
        AlertDraft(
            id=did("alert:rainstorm"),
            color=AlertColor.ORANGE,
            category=[Category.MET],
            response_type=[ResponseType.AVOID],
            event="暴雨",
            headline="暴雨橙色预警",
            description="预计未来3小时内豫园地区降雨量将达50毫米以上。",
            instruction="避免前往地下空间和低洼地带。",
            area_desc="黄浦区豫园街道",
            expires=soon,
            area=rect(121.482, 31.216, 121.500, 31.227),
            en=EnglishText(
                event="Rainstorm",
                headline="Orange rainstorm warning",
                description="More than 50 mm of rain expected around Yuyuan within 3 hours.",
                instruction="Keep out of underground spaces and low-lying streets.",
            ),
        ),
        approver=chief,
    )
    weaker = await issue(
        AlertDraft(
            id=did("alert:rainstorm:update"),
            msg_type=MsgType.UPDATE,
            references=[storm.id],
            color=AlertColor.YELLOW,
            headline="暴雨黄色预警 (降级)",
            en=EnglishText(
                event="Rainstorm",
                headline="Rainstorm warning lowered to yellow",
                description="The rain weakens; 20 mm more expected within 3 hours.",
            ),
        )
    )
    await issue(
        AlertDraft(
            id=did("alert:rainstorm:cancel"),
            msg_type=MsgType.CANCEL,
            references=[weaker.id],
        )
    )
