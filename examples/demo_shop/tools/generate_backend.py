#!/usr/bin/env python3
"""Generate the Lumo 鹿末 demo backend: users, orders and logistics events.

Pure standard library, fixed seed, so the output is byte-for-byte reproducible:

    python examples/demo_shop/tools/generate_backend.py

Reads   catalog/products.csv
Writes  backend/users.csv, backend/orders.jsonl, backend/logistics_events.jsonl, fixtures.yaml

Every order is simulated through its whole life cycle (payment, warehouse, carrier legs, delivery,
confirmation, after-sales) and its status is then *derived* from the snapshot time AS_OF, so
statuses, timestamps and tracking events always agree with each other.  The policy numbers used
here mirror shop.yaml; tools/check_data.py verifies that the two agree.
"""

from __future__ import annotations

import csv
import json
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

SEED = 20261120
ROOT = Path(__file__).resolve().parent.parent
TZ = timezone(timedelta(hours=8), "Asia/Shanghai")
START = datetime(2026, 8, 1, 0, 0, 0, tzinfo=TZ)
AS_OF = datetime(2026, 11, 20, 15, 0, 0, tzinfo=TZ)  # data snapshot time ("now" for the fixtures)

# ---- policy numbers (keep in sync with shop.yaml; check_data.py verifies) ----
FREE_SHIPPING_THRESHOLD = Decimal("99.00")
SHIPPING_FEE = Decimal("8.00")
PAYMENT_TIMEOUT = timedelta(hours=24)
AUTO_CONFIRM = timedelta(days=14)
RETURN_DAYS = 7
QUALITY_DAYS = 15
DAMAGE_REPORT = timedelta(hours=48)
SHIP_CUTOFF = time(16, 0)
SF_THRESHOLD = Decimal("1000.00")  # orders paying >= this ship with SF Express, insured
HUABEI_MIN = Decimal("300.00")
PROMO_PAID_DAYS = {date(2026, 11, 10), date(2026, 11, 11), date(2026, 11, 12)}  # 72 h dispatch
D11_START = datetime(2026, 10, 31, 20, 0, tzinfo=TZ)
D11_END = datetime(2026, 11, 11, 23, 59, 59, tzinfo=TZ)

CENT = Decimal("0.01")


def money(x: Any) -> Decimal:
    return Decimal(str(x)).quantize(CENT, ROUND_HALF_UP)


# ---------------------------------------------------------------- coupons
@dataclass(frozen=True)
class Coupon:
    code: str
    threshold: Decimal
    amount: Decimal
    scope: str  # new_user | birthday | monthly | d11 | points
    tier: str | None = None
    per_month: int = 0


COUPONS = [
    Coupon("NEW20", money(99), money(20), "new_user"),
    Coupon("BDAY10", money(50), money(10), "birthday", "regular"),
    Coupon("BDAY20", money(100), money(20), "birthday", "silver"),
    Coupon("BDAY50", money(300), money(50), "birthday", "gold"),
    Coupon("BDAY100", money(500), money(100), "birthday", "platinum"),
    Coupon("SILVER15", money(199), money(15), "monthly", "silver", 1),
    Coupon("GOLD30", money(299), money(30), "monthly", "gold", 2),
    Coupon("PLAT60", money(500), money(60), "monthly", "platinum", 2),
    Coupon("D11-30", money(300), money(30), "d11"),
    Coupon("D11-100", money(1000), money(100), "d11"),
    Coupon("PTS5", money(0), money(5), "points"),
]
COUPON_BY_CODE = {c.code: c for c in COUPONS}

# ---------------------------------------------------------------- geography
ZONE_OF = {}
for _zone, _provs in {
    "A": "上海 江苏 浙江 安徽",
    "B": "北京 天津 河北 山西 山东 河南 湖北 湖南 江西 福建 广东",
    "C": "广西 海南 重庆 四川 贵州 云南 陕西 甘肃 宁夏 青海 内蒙古 辽宁 吉林 黑龙江",
    "D": "新疆 西藏",
}.items():
    for _p in _provs.split():
        ZONE_OF[_p] = _zone

VIA_HUB = {  # intermediate hub for far destinations (zone C/D)
    "广西": ("长沙", "Changsha"),
    "海南": ("广州", "Guangzhou"),
    "重庆": ("武汉", "Wuhan"),
    "四川": ("武汉", "Wuhan"),
    "贵州": ("长沙", "Changsha"),
    "云南": ("长沙", "Changsha"),
    "陕西": ("郑州", "Zhengzhou"),
    "甘肃": ("西安", "Xi'an"),
    "宁夏": ("西安", "Xi'an"),
    "青海": ("西安", "Xi'an"),
    "内蒙古": ("北京", "Beijing"),
    "辽宁": ("天津", "Tianjin"),
    "吉林": ("沈阳", "Shenyang"),
    "黑龙江": ("沈阳", "Shenyang"),
    "新疆": ("兰州", "Lanzhou"),
    "西藏": ("成都", "Chengdu"),
}
SNOW_PROVINCES = {"黑龙江", "吉林", "内蒙古", "新疆"}

# user_id | name | preferred_lang | member_tier | email | registered (YYYY-MM-DD)
USERS_RAW = """
U10001|王晓雯|zh|gold|wangxiaowen@example.com|2021-03-14
U10002|李俊杰|zh|silver|lijunjie88@example.cn|2022-07-02
U10003|陈思远|zh|regular|chensy@example.net|2024-11-20
U10004|刘芳|zh|platinum|liufang.hz@example.com|2020-05-09
U10005|Emily Carter|en|silver|emily.carter@example.com|2023-09-18
U10006|赵磊|zh|regular|zhaolei_cd@example.cn|2025-02-11
U10007|孙丽娜|zh|gold|sunlina@example.com|2021-12-25
U10008|周浩然|zh|regular|zhouhaoran03@example.cn|2025-09-06
U10009|吴佳怡|zh|silver|wujiayi@example.com|2023-04-30
U10010|Daniel Kim|en|gold|daniel.kim@example.net|2022-01-15
U10011|郑凯|zh|regular|zhengkai_qd@example.cn|2024-06-18
U10012|黄雅琴|zh|platinum|huangyaqin@example.com|2019-10-01
U10013|林晨|zh|silver|linchen.xm@example.com|2023-02-27
U10014|何志强|zh|regular|hezhiqiang@example.cn|2025-05-20
U10015|马晓东|zh|regular|maxiaodong@example.net|2024-08-08
U10016|Sophie Laurent|en|regular|sophie.laurent@example.com|2026-09-03
U10017|高雪|zh|gold|gaoxue.tj@example.com|2021-08-12
U10018|罗文斌|zh|silver|luowenbin@example.cn|2022-11-11
U10019|梁静|zh|regular|liangjing_nn@example.cn|2025-03-03
U10020|宋佳|zh|silver|songjia@example.com|2022-06-06
U10021|唐宇|zh|regular|tangyu.cs@example.net|2024-12-12
U10022|许婷|zh|gold|xuting@example.com|2020-09-19
U10023|韩冬|zh|regular|handong.hrb@example.cn|2025-07-21
U10024|冯雨欣|zh|regular|fengyuxin@example.com|2025-10-02
U10025|James O'Brien|en|silver|james.obrien@example.net|2023-05-12
U10026|曹阳|zh|platinum|caoyang@example.com|2019-04-22
U10027|彭丽|zh|regular|pengli.nc@example.cn|2025-01-08
U10028|袁博|zh|silver|yuanbo@example.com|2022-03-16
U10029|蒋琳|zh|regular|jianglin.nb@example.net|2024-04-01
U10030|Priya Sharma|en|regular|priya.sharma@example.com|2026-10-12
U10031|沈建国|zh|gold|shenjianguo@example.cn|2020-12-05
U10032|杜晓峰|zh|regular|duxiaofeng@example.com|2025-06-15
U10033|叶子涵|zh|silver|yezihan@example.cn|2023-07-07
U10034|潘明|zh|regular|panming.sjz@example.com|2024-10-30
U10035|Lucas Martin|en|regular|lucas.martin@example.net|2025-08-19
U10036|范晓燕|zh|regular|fanxiaoyan@example.cn|2025-04-14
U10037|邓家豪|zh|gold|dengjiahao@example.com|2021-06-01
U10038|吕敏|zh|regular|lvmin.gy@example.cn|2025-11-26
U10039|Chris Wong|en|platinum|chris.wong@example.com|2020-02-14
U10040|钱雨桐|zh|silver|qianyutong@example.net|2023-10-23
U10041|丁一鸣|zh|regular|dingyiming@example.cn|2024-09-09
U10042|任佳琪|zh|regular|renjiaqi@example.com|2026-08-15
U10043|Mei Lin Tan|en|silver|meilin.tan@example.com|2024-01-29
U10044|姚远|zh|regular|yaoyuan.hk@example.cn|2026-09-20
U10045|谭晓琳|zh|gold|tanxiaolin@example.com|2021-04-04
U10046|卢志明|zh|regular|luzhiming@example.net|2025-12-01
U10047|Tom Becker|en|regular|tom.becker@example.com|2025-03-28
U10048|欧阳倩|zh|silver|ouyangqian@example.cn|2022-08-30
U10049|方晓|zh|regular|fangxiao.hhht@example.com|2026-11-02
U10050|Ana Souza|en|regular|ana.souza@example.net|2026-10-28
"""

# user_id | province | province_en | city | city_en | district | district_en | street (default address)
ADDRESSES_RAW = """
U10001|上海|Shanghai|上海市|Shanghai|浦东新区|Pudong New Area|张杨路1588弄12号502室
U10002|北京|Beijing|北京市|Beijing|朝阳区|Chaoyang District|望京街道阜通东大街6号院3号楼1202室
U10003|广东|Guangdong|广州市|Guangzhou|天河区|Tianhe District|员村二横路8号5栋1703房
U10004|浙江|Zhejiang|杭州市|Hangzhou|西湖区|Xihu District|文三路478号华星时代广场A座1206室
U10005|上海|Shanghai|上海市|Shanghai|静安区|Jing'an District|南京西路1266弄3号1801室
U10006|四川|Sichuan|成都市|Chengdu|武侯区|Wuhou District|科华北路62号2栋3单元902号
U10007|江苏|Jiangsu|南京市|Nanjing|鼓楼区|Gulou District|中山北路105号4幢601室
U10008|湖北|Hubei|武汉市|Wuhan|洪山区|Hongshan District|珞喻路1037号华中科技大学紫菘公寓12栋403
U10009|广东|Guangdong|深圳市|Shenzhen|南山区|Nanshan District|南山大道2088号3栋1502
U10010|北京|Beijing|北京市|Beijing|朝阳区|Chaoyang District|三里屯路19号院6号楼2单元801
U10011|山东|Shandong|青岛市|Qingdao|市南区|Shinan District|香港中路76号2单元1103户
U10012|上海|Shanghai|上海市|Shanghai|徐汇区|Xuhui District|漕溪北路595弄7号1202室
U10013|福建|Fujian|厦门市|Xiamen|思明区|Siming District|莲前西路288号11号楼702室
U10014|河南|Henan|郑州市|Zhengzhou|金水区|Jinshui District|花园路39号院2号楼1单元601
U10015|陕西|Shaanxi|西安市|Xi'an|雁塔区|Yanta District|科技路48号3号楼2单元1702室
U10016|上海|Shanghai|上海市|Shanghai|长宁区|Changning District|愚园路1088弄5号301室
U10017|天津|Tianjin|天津市|Tianjin|南开区|Nankai District|鞍山西道318号4号楼3门502
U10018|重庆|Chongqing|重庆市|Chongqing|渝北区|Yubei District|金开大道1608号3栋22-4
U10019|广西|Guangxi|南宁市|Nanning|青秀区|Qingxiu District|民族大道136号5栋1201房
U10020|辽宁|Liaoning|沈阳市|Shenyang|和平区|Heping District|南京南街197号2单元9-2
U10021|湖南|Hunan|长沙市|Changsha|岳麓区|Yuelu District|麓谷大道627号8栋1603
U10022|江苏|Jiangsu|苏州市|Suzhou|苏州工业园区|Suzhou Industrial Park|星湖街328号12幢1001室
U10023|黑龙江|Heilongjiang|哈尔滨市|Harbin|南岗区|Nangang District|西大直街92号6单元402室
U10024|云南|Yunnan|昆明市|Kunming|五华区|Wuhua District|翠湖南路18号3幢2单元501
U10025|广东|Guangdong|深圳市|Shenzhen|福田区|Futian District|福华三路168号2栋2803
U10026|北京|Beijing|北京市|Beijing|海淀区|Haidian District|中关村南大街27号院5号楼1506
U10027|江西|Jiangxi|南昌市|Nanchang|红谷滩区|Honggutan District|丰和中大道1199号7栋1102室
U10028|安徽|Anhui|合肥市|Hefei|蜀山区|Shushan District|黄山路459号3幢704室
U10029|浙江|Zhejiang|宁波市|Ningbo|鄞州区|Yinzhou District|天童南路555号16幢1208室
U10030|浙江|Zhejiang|杭州市|Hangzhou|滨江区|Binjiang District|江南大道3850号2幢1605室
U10031|上海|Shanghai|上海市|Shanghai|闵行区|Minhang District|莘庄镇莘松路380弄21号601室
U10032|新疆|Xinjiang|乌鲁木齐市|Urumqi|天山区|Tianshan District|解放南路156号3栋2单元801
U10033|广东|Guangdong|佛山市|Foshan|顺德区|Shunde District|大良街道德和路12号6座902
U10034|河北|Hebei|石家庄市|Shijiazhuang|长安区|Chang'an District|中山东路508号5号楼1单元1101
U10035|北京|Beijing|北京市|Beijing|东城区|Dongcheng District|东直门南大街11号2号楼1607
U10036|山西|Shanxi|太原市|Taiyuan|小店区|Xiaodian District|长治路227号9号楼2单元702
U10037|广东|Guangdong|广州市|Guangzhou|海珠区|Haizhu District|新港中路397号12栋2304房
U10038|贵州|Guizhou|贵阳市|Guiyang|观山湖区|Guanshanhu District|林城东路88号4栋1单元1803
U10039|广东|Guangdong|深圳市|Shenzhen|南山区|Nanshan District|后海大道2388号6栋3502
U10040|江苏|Jiangsu|无锡市|Wuxi|滨湖区|Binhu District|蠡湖大道2011号18幢902室
U10041|吉林|Jilin|长春市|Changchun|朝阳区|Chaoyang District|工农大路1288号3栋2单元1504
U10042|甘肃|Gansu|兰州市|Lanzhou|城关区|Chengguan District|东岗西路482号2单元1201
U10043|上海|Shanghai|上海市|Shanghai|黄浦区|Huangpu District|西藏南路1200弄8号1403室
U10044|海南|Hainan|海口市|Haikou|龙华区|Longhua District|滨海大道105号3栋1702房
U10045|四川|Sichuan|成都市|Chengdu|锦江区|Jinjiang District|东大街紫东楼段35号2栋2单元2104
U10046|西藏|Tibet|拉萨市|Lhasa|城关区|Chengguan District|北京中路57号3单元301
U10047|江苏|Jiangsu|苏州市|Suzhou|姑苏区|Gusu District|干将西路1188号5幢603室
U10048|湖北|Hubei|武汉市|Wuhan|武昌区|Wuchang District|中北路108号2栋1单元2602
U10049|内蒙古|Inner Mongolia|呼和浩特市|Hohhot|赛罕区|Saihan District|新华东街85号4号楼3单元602
U10050|上海|Shanghai|上海市|Shanghai|浦东新区|Pudong New Area|花木路1558弄9号1102室
"""

# Users who sometimes ask for a company invoice (fictional companies and tax ids).
COMPANIES = {
    "U10004": ("杭州云杉数字科技有限公司", "91330106MA2KXT4Q8R"),
    "U10012": ("上海青禾信息技术有限公司", "91310104MA1FR7LW3D"),
    "U10026": ("北京拾光互动文化传媒有限公司", "91110108MA01NQ5K2X"),
    "U10039": ("深圳前湾智造科技有限公司", "91440300MA5G9PE71J"),
    "U10022": ("苏州禾木设计咨询有限公司", "91320594MA1Y8UQ06C"),
}

PHONE_PREFIXES = [
    "130",
    "131",
    "132",
    "135",
    "136",
    "137",
    "138",
    "139",
    "150",
    "151",
    "152",
    "155",
    "156",
    "157",
    "158",
    "159",
    "177",
    "180",
    "181",
    "182",
    "183",
    "185",
    "186",
    "187",
    "188",
    "189",
    "199",
]
COURIER_SURNAMES = [
    ("王", "Wang"),
    ("李", "Li"),
    ("张", "Zhang"),
    ("刘", "Liu"),
    ("陈", "Chen"),
    ("杨", "Yang"),
    ("赵", "Zhao"),
    ("黄", "Huang"),
    ("周", "Zhou"),
    ("吴", "Wu"),
    ("徐", "Xu"),
    ("孙", "Sun"),
]

CARRIERS = {
    "SF": {"zh": "顺丰速运", "en": "SF Express"},
    "JD": {"zh": "京东物流", "en": "JD Logistics"},
    "ZTO": {"zh": "中通快递", "en": "ZTO Express"},
}

REASONS = {
    "no_reason": ("七天无理由退货", "7-day no-reason return"),
    "no_reason_exchange": ("七天无理由换货（换颜色/尺码）", "7-day no-reason exchange (colour/size)"),
    "size_not_fit": ("尺码不合适", "Size doesn't fit"),
    "quality_issue": ("商品质量问题", "Quality issue"),
    "wrong_item": ("商家发错货", "Wrong item received"),
    "damaged_in_transit": ("运输途中破损", "Damaged in transit"),
    "lost_in_transit": ("快递丢件", "Lost in transit"),
}
QUALITY_DETAILS = {  # (sku prefixes) -> typical fault descriptions written by customers
    ("LM-PH-00",): [
        ("屏幕出现一条绿色竖线", "A green vertical line appears on the screen"),
        ("充电时机身发烫，充不进电", "Gets very hot and won't charge"),
        ("通话时对方听不到声音", "Callers can't hear me during calls"),
    ],
    ("LM-PH-101", "LM-PH-102"): [
        ("壳子边缘开裂", "The case edge has cracked"),
        ("磁吸力很弱，吸不住充电器", "Magnet is too weak to hold the charger"),
    ],
    ("LM-PH-105",): [("钢化膜边缘翘起，贴不牢", "Protector edges lift and won't stay on")],
    ("LM-PH-103", "LM-PH-104", "LM-PH-106", "LM-PC-009"): [
        ("插上电源没有任何反应", "Nothing happens when plugged in"),
        ("充电时断时续，指示灯一直闪", "Charging keeps cutting out and the light keeps blinking"),
    ],
    ("LM-AU-001", "LM-AU-002", "LM-AU-008"): [
        ("左耳机没有声音，重置后仍然不行", "Left earbud has no sound, even after a reset"),
        ("降噪开启后有明显电流声", "Audible hiss when noise cancelling is on"),
        ("充电盒无法给耳机充电", "Charging case does not charge the earbuds"),
    ],
    ("LM-AU-003", "LM-AU-004", "LM-AU-007"): [
        ("蓝牙经常自动断开", "Bluetooth keeps disconnecting"),
        ("右侧声音明显比左侧小", "Right side is much quieter than the left"),
    ],
    ("LM-AU-005", "LM-AU-006"): [
        ("音量开大后有破音", "Distorts at higher volume"),
        ("无法开机，充电指示灯不亮", "Won't turn on, charging light stays off"),
    ],
    ("LM-AU-009",): [("耳塞套有破损", "Ear tips arrived torn")],
    ("LM-PC-001",): [
        ("部分按键失灵", "Some keys don't register"),
        ("蓝牙模式下经常断连", "Keeps disconnecting in Bluetooth mode"),
    ],
    ("LM-PC-002", "LM-PC-003"): [
        ("滚轮异响，滚动跳格", "Scroll wheel grinds and skips"),
        ("左键连击", "Left button double-clicks"),
    ],
    ("LM-PC-004",): [("HDMI 口接显示器没有信号", "No signal from the HDMI port")],
    ("LM-PC-006", "LM-PC-007"): [("连接后偶尔没有反应", "Occasionally stops responding after connecting")],
    ("LM-PC-008",): [("电脑识别不到硬盘", "Computer doesn't detect the drive")],
    ("LM-PC-005", "LM-PC-010", "LM-PC-011", "LM-PC-012"): [
        ("收到时有明显划痕和磕碰", "Arrived with visible scratches and dents"),
        ("使用几天后无法正常工作", "Stopped working properly after a few days"),
    ],
    ("LM-SH-",): [
        ("无法连接 Wi-Fi，已按说明书重置", "Won't connect to Wi-Fi, reset as per the manual"),
        ("运行时有明显异响", "Makes a loud abnormal noise when running"),
    ],
    ("LM-WR-001", "LM-WR-002", "LM-WR-003", "LM-WR-004", "LM-WR-005"): [
        ("充电后无法开机", "Won't turn on after charging"),
        ("心率数据一直显示为 0", "Heart rate always reads 0"),
    ],
    ("LM-WR-006", "LM-WR-007"): [("表带卡扣断裂", "Strap buckle broke"), ("底座无法充电", "Dock does not charge")],
    ("LM-KT-",): [
        ("加热功能失灵，显示 E2 故障码", "Heating doesn't work, shows error E2"),
        ("底座漏水", "Water leaks from the base"),
        ("运行时有焦糊味", "Smells of burning when running"),
    ],
    ("LM-BA-001", "LM-BA-004", "LM-BA-005", "LM-BA-009", "LM-BA-012"): [
        ("拉链头脱落", "Zip puller came off"),
        ("肩带缝线开线", "Shoulder strap seam split"),
    ],
    ("LM-BA-002", "LM-BA-003"): [
        ("万向轮卡顿异响", "Spinner wheel sticks and squeaks"),
        ("拉杆无法锁定", "Telescopic handle won't lock"),
    ],
    ("LM-BA-",): [
        ("衣服有脱线和小洞", "Loose threads and a small hole"),
        ("洗一次就严重缩水", "Shrank badly after one wash"),
    ],
}


def quality_detail(rng: random.Random, sku: str) -> tuple[str, str]:
    for prefixes, options in QUALITY_DETAILS.items():
        if sku.startswith(prefixes):
            return rng.choice(options)
    raise KeyError(sku)


CANCEL_REASONS = {
    "payment_timeout": ("超时未支付，系统自动取消", "Not paid within 24 hours, cancelled automatically"),
    "changed_mind": ("不想要了", "Changed my mind"),
    "wrong_address": ("地址/电话填写有误", "Wrong address or phone number"),
    "duplicate_order": ("重复下单", "Duplicate order"),
    "forgot_coupon": ("忘记使用优惠券，重新下单", "Forgot to apply a coupon, reordering"),
    "wrong_variant": ("拍错颜色/规格", "Chose the wrong colour or variant"),
}
BUYER_NOTES_ZH = [
    "请尽量周末送货，工作日家里没人",
    "送人的礼物，包裹里请不要放价格单",
    "发货前麻烦电话联系",
    "请放小区门口的快递柜",
    "麻烦包装结实一点，谢谢",
    "能发顺丰吗？",
]
BUYER_NOTES_EN = [
    "Please deliver on the weekend if possible",
    "It's a gift, please don't include the receipt",
    "Please call before delivery",
    "Leave it at the parcel locker please",
    "Can you ship with SF?",
]


# ---------------------------------------------------------------- helpers
def iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat(timespec="seconds")


def at(d: date, h: float) -> datetime:
    """datetime on date d at fractional hour h (can exceed 24)."""
    return datetime(d.year, d.month, d.day, tzinfo=TZ) + timedelta(seconds=round(h * 3600))


class Rng(random.Random):
    def hours(self, lo: float, hi: float) -> timedelta:
        return timedelta(seconds=round(self.uniform(lo, hi) * 3600))

    def between(self, lo: datetime, hi: datetime) -> datetime:
        return lo + timedelta(seconds=self.randint(0, max(0, int((hi - lo).total_seconds()))))

    def digits(self, n: int) -> str:
        return "".join(self.choice("0123456789") for _ in range(n))


def load_products() -> list[dict[str, Any]]:
    with open(ROOT / "catalog" / "products.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["price_d"] = money(r["price"])
        r["colors_l"] = r["colors"].split("|")
        r["sizes_l"] = r["sizes"].split("|") if r["sizes"] else []
        r["custom"] = r["returnable"] == "false" and r["category"] != "gift_cards"
    return rows


# ---------------------------------------------------------------- users
def make_users(rng: Rng) -> list[dict[str, Any]]:
    users = []
    used_phones = set()
    addresses = {line.split("|")[0]: line.split("|")[1:] for line in ADDRESSES_RAW.strip().splitlines()}
    for line in USERS_RAW.strip().splitlines():
        uid, name, lang, tier, email, reg = line.split("|")
        prov, prov_en, city, city_en, dist, dist_en, street = addresses[uid]
        while True:
            phone = rng.choice(PHONE_PREFIXES) + rng.digits(8)
            if phone not in used_phones:
                used_phones.add(phone)
                break
        reg_day = date.fromisoformat(reg)
        reg_at = at(reg_day, rng.uniform(8, 23.5))
        bday = date(2000, rng.randint(1, 12), rng.randint(1, 28))
        points = {"regular": (0, 900), "silver": (300, 3000), "gold": (1500, 9000), "platinum": (6000, 26000)}[tier]
        users.append(
            {
                "user_id": uid,
                "name": name,
                "phone": phone,
                "email": email,
                "member_tier": tier,
                "preferred_lang": lang,
                "registered_at": reg_at,
                "birthday": bday.strftime("%m-%d"),
                "points_balance": rng.randint(*points),
                "province": prov,
                "province_en": prov_en,
                "city": city,
                "city_en": city_en,
                "district": dist,
                "district_en": dist_en,
                "street": street,
            }
        )
    return users


# ---------------------------------------------------------------- logistics
@dataclass
class Ev:
    t: datetime
    code: str
    loc_zh: str
    loc_en: str
    zh: str
    en: str


def short_city(city: str) -> str:
    return city[:-1] if city.endswith("市") else city


def hub_name(carrier: str, city_zh: str, city_en: str) -> tuple[str, str]:
    if carrier == "SF":
        return f"{city_zh}中转场", f"{city_en} Transit Hub"
    if carrier == "JD":
        return f"{city_zh}分拣中心", f"{city_en} Sorting Center"
    return f"{city_zh}转运中心", f"{city_en} Distribution Center"


def station_name(carrier: str, addr: dict[str, Any]) -> tuple[str, str]:
    c, d = short_city(addr["city"]), addr["district"]
    ce, de = addr["city_en"], addr["district_en"]
    if carrier == "SF":
        return f"{c}{d}营业部", f"{ce} {de} Service Point"
    if carrier == "JD":
        return f"{c}{d}配送站", f"{ce} {de} Delivery Station"
    return f"{c}{d}网点", f"{ce} {de} Branch"


WAREHOUSE = {
    "city": "上海市",
    "city_en": "Shanghai",
    "district": "青浦区",
    "district_en": "Qingpu District",
    "province": "上海",
}
WH_ZH, WH_EN = "鹿末华东仓（上海青浦）", "Lumo East China Warehouse (Qingpu, Shanghai)"
ORIGIN = ("上海青浦", "Shanghai Qingpu")


def courier(rng: Rng) -> tuple[str, str, str]:
    zh, en = rng.choice(COURIER_SURNAMES)
    phone = rng.choice(PHONE_PREFIXES) + "****" + rng.digits(4)
    return f"{zh}师傅", f"Mr. {en}", phone


def plan_legs(carrier: str, frm: tuple[str, str, str], to: tuple[str, str, str]) -> list[tuple[str, str]]:
    """Hub sequence between two provinces. frm/to = (province, city_zh_short, city_en)."""
    if frm[1] == to[1]:
        return [hub_name(carrier, *ORIGIN)] if frm[1] == "上海" else [hub_name(carrier, frm[1], frm[2])]
    a = hub_name(carrier, *ORIGIN) if frm[1] == "上海" else hub_name(carrier, frm[1], frm[2])
    b = hub_name(carrier, *ORIGIN) if to[1] == "上海" else hub_name(carrier, to[1], to[2])
    far = to[0] if to[0] != "上海" else frm[0]
    legs = [a]
    if ZONE_OF[far] in ("C", "D") and far in VIA_HUB:
        legs.append(hub_name(carrier, *VIA_HUB[far]))
    legs.append(b)
    return legs


def transit_hours(zone: str, rng: Rng, n_legs: int) -> list[float]:
    total = {"A": (4, 9), "B": (20, 34), "C": (40, 68), "D": (88, 130)}[zone]
    h = rng.uniform(*total)
    if n_legs <= 1:
        return [h]
    split = rng.uniform(0.4, 0.6)
    return [h * split, h * (1 - split)]


def deliver_tail(
    rng: Rng, carrier: str, arrive_station: datetime, st: tuple[str, str], addr_loc: tuple[str, str], to_warehouse: bool
) -> list[Ev]:
    evs = []
    # out for delivery: same day if the parcel reached the station early enough, else next morning
    d = arrive_station.date()
    hr = arrive_station.hour + arrive_station.minute / 60
    if hr < 7.0:
        ofd = at(d, rng.uniform(7.5, 9.5))
    elif hr < 12.5:
        ofd = arrive_station + rng.hours(0.4, 1.5)
    else:
        ofd = at(d + timedelta(days=1), rng.uniform(7.5, 10.0))
    cz, ce, cphone = courier(rng)
    evs.append(
        Ev(
            ofd,
            "OUT_FOR_DELIVERY",
            st[0],
            st[1],
            f"快件已交给{cz}，正在派送途中，联系电话：{cphone}",
            f"Out for delivery with courier {ce} (tel. {cphone})",
        )
    )
    end_of_day = at(ofd.date(), 20.5)
    latest = min(ofd + rng.hours(0.5, 7.0), end_of_day)
    delivered = latest if latest > ofd + timedelta(minutes=20) else ofd + timedelta(minutes=25)
    if to_warehouse:
        zh, en = (
            "快件已签收，签收人：鹿末华东仓售后组",
            "Delivered, signed for by Lumo East China Warehouse after-sales team",
        )
    else:
        options = {
            "SF": [
                (
                    "快件已签收，签收人：本人。感谢使用顺丰，期待再次为您服务",
                    "Delivered, signed for by the recipient. Thank you for choosing SF Express",
                ),
                ("快件已签收，签收人：前台代收", "Delivered, signed for by the front desk"),
                (
                    "快件已投递至丰巢智能柜，取件码已短信发送，如有疑问请联系派件员",
                    "Delivered to a Hive Box parcel locker; the pickup code was sent by SMS",
                ),
            ],
            "JD": [
                (
                    "您的订单已签收，签收人：本人。感谢您选择京东物流，期待再次为您服务",
                    "Delivered, signed for by the recipient. Thank you for choosing JD Logistics",
                ),
                (
                    "您的快件已放在家门口（已电话确认），签收人：本人",
                    "Left at the front door as agreed by phone, recorded as signed by the recipient",
                ),
            ],
            "ZTO": [
                ("快件已签收，签收人：本人，如有疑问请联系派件员", "Delivered, signed for by the recipient"),
                (
                    "快件已由菜鸟驿站代收，请凭取件码及时取件",
                    "Received by a Cainiao Post station; collect it with your pickup code",
                ),
                ("快件已签收，签收人：门卫代收", "Delivered, signed for by the building guard"),
            ],
        }[carrier]
        zh, en = rng.choice(options)
    evs.append(Ev(delivered, "DELIVERED", addr_loc[0], addr_loc[1], zh, en))
    return evs


def outbound_events(
    rng: Rng, carrier: str, addr: dict[str, Any], shipped_at: datetime, weather: bool = False, lost: bool = False
) -> list[Ev]:
    evs = [
        Ev(
            shipped_at,
            "CREATED",
            WH_ZH,
            WH_EN,
            f"商家已发货，{CARRIERS[carrier]['zh']}运单已生成，等待快递员揽收",
            f"Shipped by Lumo; {CARRIERS[carrier]['en']} waybill created, awaiting pickup",
        )
    ]
    pickup = at(shipped_at.date(), rng.uniform(17.6, 20.4))
    if pickup < shipped_at + timedelta(minutes=30):
        pickup = shipped_at + rng.hours(0.5, 1.5)
    pz, pe = {
        "SF": ("顺丰速运已收取快件", "Picked up by SF Express"),
        "JD": ("京东物流快递员已揽收", "Picked up by a JD Logistics courier"),
        "ZTO": ("【上海青浦华新网点】已揽收", "Picked up by ZTO Shanghai Qingpu Huaxin branch"),
    }[carrier]
    evs.append(Ev(pickup, "PICKED_UP", WH_ZH, WH_EN, pz, pe))
    dest = (addr["province"], short_city(addr["city"]), addr["city_en"])
    legs = plan_legs(carrier, ("上海", "上海", "Shanghai"), dest)
    st = station_name(carrier, addr)
    loc = (f"{addr['city']}{addr['district']}", f"{addr['district_en']}, {addr['city_en']}")
    t = pickup + rng.hours(1.0, 2.5)
    evs.append(Ev(t, "ARRIVED", *legs[0], f"快件已到达【{legs[0][0]}】", f"Arrived at {legs[0][1]}"))
    zone = ZONE_OF[addr["province"]]
    hops = transit_hours(zone, rng, len(legs) - 1) if len(legs) > 1 else []
    for i in range(len(legs)):
        nxt = legs[i + 1] if i + 1 < len(legs) else st
        t = t + rng.hours(1.0, 3.0)
        evs.append(
            Ev(
                t,
                "DEPARTED",
                *legs[i],
                f"快件已从【{legs[i][0]}】发出，下一站【{nxt[0]}】",
                f"Departed {legs[i][1]}, next stop {nxt[1]}",
            )
        )
        if lost and i == len(legs) - 2:
            t = t + timedelta(hours=hops[i]) if i < len(hops) else t + rng.hours(5, 10)
            evs.append(Ev(t, "ARRIVED", *nxt, f"快件已到达【{nxt[0]}】", f"Arrived at {nxt[1]}"))
            t2 = t + rng.hours(50, 56)
            evs.append(
                Ev(
                    t2,
                    "EXCEPTION",
                    *nxt,
                    f"快件在【{nxt[0]}】滞留，承运商正在核实原因",
                    f"Parcel held at {nxt[1]}; the carrier is investigating",
                )
            )
            evs.append(
                Ev(
                    t2 + rng.hours(20, 28),
                    "EXCEPTION",
                    *nxt,
                    "经承运商核实，快件已遗失，已启动理赔流程",
                    "The carrier has confirmed the parcel is lost and opened a claim",
                )
            )
            return evs
        if i + 1 < len(legs):
            t = t + timedelta(hours=hops[i] if i < len(hops) else rng.uniform(4, 8))
            evs.append(
                Ev(t, "ARRIVED", *legs[i + 1], f"快件已到达【{legs[i + 1][0]}】", f"Arrived at {legs[i + 1][1]}")
            )
            if weather and i + 1 == len(legs) - 1:
                evs.append(
                    Ev(
                        t + rng.hours(1, 3),
                        "EXCEPTION",
                        *legs[i + 1],
                        "受强降雪天气影响，快件中转延误，预计晚 1–2 天送达，敬请谅解",
                        "Delayed by heavy snow at the hub; delivery expected 1-2 days later than usual",
                    )
                )
                t = t + rng.hours(22, 30)
    local = len(legs) == 1
    t = t + (rng.hours(2.5, 5) if local else rng.hours(2, 4.5))
    evs.append(
        Ev(t, "ARRIVED", *st, f"快件已到达【{st[0]}】，正在安排派送", f"Arrived at {st[1]}, preparing for delivery")
    )
    evs += deliver_tail(rng, carrier, t, st, loc, to_warehouse=False)
    return evs


def return_events(rng: Rng, carrier: str, addr: dict[str, Any], booked_at: datetime) -> list[Ev]:
    loc = (f"{addr['city']}{addr['district']}", f"{addr['district_en']}, {addr['city_en']}")
    st_user = station_name(carrier, addr)
    evs = [
        Ev(
            booked_at,
            "CREATED",
            *loc,
            f"已预约{CARRIERS[carrier]['zh']}上门取件，快递员将按预约时间上门",
            f"{CARRIERS[carrier]['en']} pickup booked; the courier will come at the scheduled time",
        )
    ]
    d = booked_at.date()
    hr = booked_at.hour + booked_at.minute / 60
    pickup = (
        at(d, rng.uniform(max(hr + 1.0, 9.0), 19.0)) if hr < 16.5 else at(d + timedelta(days=1), rng.uniform(9.0, 18.0))
    )
    evs.append(Ev(pickup, "PICKED_UP", *loc, "快递员已上门取件", "Courier collected the parcel from the sender"))
    t = pickup + rng.hours(1.5, 4.0)
    evs.append(Ev(t, "ARRIVED", *st_user, f"快件已到达【{st_user[0]}】", f"Arrived at {st_user[1]}"))
    src = (addr["province"], short_city(addr["city"]), addr["city_en"])
    legs = plan_legs(carrier, src, ("上海", "上海", "Shanghai"))
    hops = transit_hours(ZONE_OF[addr["province"]], rng, len(legs) - 1) if len(legs) > 1 else []
    t = t + rng.hours(1.5, 3.5)
    evs.append(
        Ev(
            t,
            "DEPARTED",
            *st_user,
            f"快件已从【{st_user[0]}】发出，下一站【{legs[0][0]}】",
            f"Departed {st_user[1]}, next stop {legs[0][1]}",
        )
    )
    t = t + rng.hours(1.0, 2.5)
    evs.append(Ev(t, "ARRIVED", *legs[0], f"快件已到达【{legs[0][0]}】", f"Arrived at {legs[0][1]}"))
    for i in range(len(legs) - 1):
        t = t + rng.hours(1.0, 3.0)
        evs.append(
            Ev(
                t,
                "DEPARTED",
                *legs[i],
                f"快件已从【{legs[i][0]}】发出，下一站【{legs[i + 1][0]}】",
                f"Departed {legs[i][1]}, next stop {legs[i + 1][1]}",
            )
        )
        t = t + timedelta(hours=hops[i])
        evs.append(Ev(t, "ARRIVED", *legs[i + 1], f"快件已到达【{legs[i + 1][0]}】", f"Arrived at {legs[i + 1][1]}"))
    wst = station_name(carrier, {**WAREHOUSE, "district": "青浦华新", "district_en": "Qingpu Huaxin"})
    t = t + rng.hours(1.0, 3.0)
    evs.append(
        Ev(
            t,
            "DEPARTED",
            *legs[-1],
            f"快件已从【{legs[-1][0]}】发出，下一站【{wst[0]}】",
            f"Departed {legs[-1][1]}, next stop {wst[1]}",
        )
    )
    t = t + rng.hours(2.0, 4.0)
    evs.append(
        Ev(t, "ARRIVED", *wst, f"快件已到达【{wst[0]}】，正在安排派送", f"Arrived at {wst[1]}, preparing for delivery")
    )
    evs += deliver_tail(rng, carrier, t, wst, (WH_ZH, WH_EN), to_warehouse=True)
    return evs


# ---------------------------------------------------------------- order simulation
STATUS_QUOTA = {
    "completed": 104,
    "delivered": 28,
    "cancelled": 18,
    "refunded": 12,
    "returned": 6,
    "return_requested": 8,
    "exchange_requested": 6,
    "exchanged": 6,
    "pending_payment": 6,
    "paid": 6,
    "processing": 9,
    "shipped": 8,
    "in_transit": 14,
    "out_for_delivery": 7,
}
WINDOWS = {  # created_at search window (hours before AS_OF: lo, hi)
    "pending_payment": (23.5, 0.05),
    "paid": (1.2, 0.02),
    "processing": (30, 0.5),
    "shipped": (30, 1.5),
    "in_transit": (8 * 24, 4),
    "out_for_delivery": (9 * 24, 14),
    "delivered": (24 * 24, 20),
    "return_requested": (26 * 24, 40),
    "returned": (30 * 24, 60),
    "refunded": (None, 70),
    "exchange_requested": (28 * 24, 60),
    "exchanged": (None, 96),
    "completed": (None, 72),
    "cancelled": (None, 1),
}


def hour_weight(t: datetime) -> float:
    hw = [4, 2, 1, 0.5, 0.3, 0.3, 0.8, 2, 3, 4, 5, 5, 6, 5, 5, 5, 5, 5, 5, 6, 8, 9, 8, 6][t.hour]
    d = t.date()
    dw = 1.0
    if date(2026, 11, 1) <= d <= date(2026, 11, 10):
        dw = 1.8
    if d == date(2026, 11, 11):
        dw = 4.5
    if d == date(2026, 10, 31) and t.hour >= 20:
        dw = 4.0
    if d.weekday() >= 5:
        dw *= 1.15
    return hw * dw


def sample_created(rng: Rng, status: str) -> datetime:
    lo_h, hi_h = WINDOWS[status]
    lo = START if lo_h is None else max(START, AS_OF - timedelta(hours=lo_h))
    hi = AS_OF - timedelta(hours=hi_h)
    while True:
        t = rng.between(lo, hi)
        if rng.random() * 40.5 < hour_weight(t):
            return t


@dataclass
class Sim:
    order: dict[str, Any]
    shipments: list[dict[str, Any]] = field(default_factory=list)


class Generator:
    def __init__(self) -> None:
        self.rng = Rng(SEED)
        self.products = load_products()
        self.by_sku = {p["sku"]: p for p in self.products}
        self.users = make_users(self.rng)
        self.user_by_id = {u["user_id"]: u for u in self.users}
        self.used_tracking: set[str] = set()
        self.coupon_use: Counter[tuple[str, str, str]] = Counter()  # (user, code, period)
        self.orders: list[Sim] = []
        self.fixture_users: set[str] = set()

    # -- small pieces
    def tracking(self, carrier: str) -> str:
        while True:
            tn = {
                "SF": lambda: "SF" + self.rng.choice("1234") + self.rng.digits(12),
                "JD": lambda: "JDV" + self.rng.choice("0123") + self.rng.digits(11),
                "ZTO": lambda: "78" + self.rng.choice("0123456789") + self.rng.digits(11),
            }[carrier]()
            if tn not in self.used_tracking:
                self.used_tracking.add(tn)
                return tn

    def pick_items(self, created: datetime, force: list[tuple[str, int]] | None) -> list[dict[str, Any]]:
        rng = self.rng
        if force:
            chosen = [(self.by_sku[s], q) for s, q in force]
        else:
            pool = [
                p
                for p in self.products
                if p["category"] != "gift_cards"
                and not (int(p["stock"]) == 0 and created >= datetime(2026, 10, 15, tzinfo=TZ))
            ]
            weights = [1.0 / float(p["price_d"]) ** 0.42 * (0.45 if p["custom"] else 1.0) for p in pool]
            first = rng.choices(pool, weights)[0]
            chosen = [(first, 1)]
            if first["sku"] in ("LM-PH-001", "LM-PH-002", "LM-PH-003") and rng.random() < 0.55:
                chosen.append((self.by_sku["LM-PH-101"], 1))
                if first["sku"] != "LM-PH-003" and rng.random() < 0.6:
                    chosen.append((self.by_sku["LM-PH-105"], 1))
            else:
                r = rng.random()
                n_more = 2 if r < 0.07 else 1 if r < 0.32 else 0
                for _ in range(n_more):
                    p = rng.choices(pool, weights)[0]
                    if all(p["sku"] != c[0]["sku"] for c in chosen):
                        chosen.append((p, 1))
            chosen = [(p, 2 if p["price_d"] < 150 and rng.random() < 0.15 else q) for p, q in chosen]
        items = []
        for p, q in chosen:
            items.append(
                {
                    "sku": p["sku"],
                    "name_zh": p["name_zh"],
                    "name_en": p["name_en"],
                    "qty": q,
                    "unit_price": p["price_d"],
                    "color": rng.choice(p["colors_l"]),
                    "size": rng.choice(p["sizes_l"]) if p["sizes_l"] else None,
                }
            )
        return items

    def pick_coupon(self, user: dict[str, Any], created: datetime, subtotal: Decimal) -> Coupon | None:
        rng = self.rng
        uid = user["user_id"]
        month = created.strftime("%Y-%m")
        eligible = []
        for c in COUPONS:
            if subtotal < c.threshold or c.amount >= subtotal:
                continue
            if c.scope == "new_user":  # valid for 30 days after registration, one use
                if created - user["registered_at"] > timedelta(days=30):
                    continue
                if self.coupon_use[(uid, c.code, "life")]:
                    continue
            elif c.scope == "birthday":
                if c.tier != user["member_tier"] or user["birthday"][:2] != created.strftime("%m"):
                    continue
                if self.coupon_use[(uid, c.code, created.strftime("%Y"))]:
                    continue
            elif c.scope == "monthly":
                if c.tier != user["member_tier"] or self.coupon_use[(uid, c.code, month)] >= c.per_month:
                    continue
            elif c.scope == "d11":
                if not (D11_START <= created <= D11_END) or self.coupon_use[(uid, c.code, "2026")]:
                    continue
            elif c.scope == "points":
                if self.coupon_use[(uid, c.code, month)] >= 3 or user["points_balance"] < 500:
                    continue
            eligible.append(c)
        if not eligible:
            return None
        c = max(eligible, key=lambda c: (c.amount, c.code))
        p_use = {"new_user": 0.85, "d11": 0.85, "points": 0.1}.get(c.scope, 0.45)
        if rng.random() > p_use:
            return None
        period = {"new_user": "life", "birthday": created.strftime("%Y"), "d11": "2026"}.get(c.scope, month)
        self.coupon_use[(uid, c.code, period)] += 1
        return c

    # -- timeline pieces
    def dispatch_times(self, paid: datetime, items: list[dict[str, Any]]) -> tuple[datetime, datetime]:
        """(processing_at, shipped_at)"""
        rng = self.rng
        d = paid.date()
        hr = paid.hour + paid.minute / 60 + paid.second / 3600
        if hr < 8.5:
            proc = at(d, rng.uniform(8.5, 9.2))
        elif paid.timetz().replace(tzinfo=None) < SHIP_CUTOFF:
            proc = paid + rng.hours(0.15, 0.6)
        else:
            proc = at(d + timedelta(days=1), rng.uniform(8.5, 9.2))
        ship_day = proc.date()
        if any(self.by_sku[i["sku"]]["custom"] for i in items):
            ship_day = ship_day + timedelta(days=rng.randint(2, 3))  # engraving / embroidery: 3-5 days
        elif paid.date() in PROMO_PAID_DAYS:
            ship_day = ship_day + timedelta(days=rng.randint(0, 1))
        if ship_day == proc.date():
            lo = proc + timedelta(minutes=40)
            hi = at(ship_day, 17.5)
            shipped = rng.between(lo, max(lo + timedelta(minutes=5), hi))
        else:
            shipped = at(ship_day, rng.uniform(9.5, 17.5))
        return proc, shipped

    def simulate(
        self, status: str, force_items: list[tuple[str, int]] | None, user_pred: Any, variant: str | None
    ) -> Sim | None:
        rng = self.rng
        created = sample_created(rng, status)
        cands = [
            u
            for u in self.users
            if u["registered_at"] < created - timedelta(minutes=5) and (user_pred is None or user_pred(u))
        ]
        if not cands:
            return None
        tw = {"regular": 1.0, "silver": 1.4, "gold": 1.9, "platinum": 2.6}
        user = rng.choices(cands, [tw[u["member_tier"]] for u in cands])[0]
        items = self.pick_items(created, force_items)
        subtotal = sum((i["unit_price"] * i["qty"] for i in items), Decimal("0.00"))
        coupon = self.pick_coupon(user, created, subtotal)
        discount = coupon.amount if coupon else money(0)
        goods_paid = subtotal - discount
        shipping = (
            money(0) if (user["member_tier"] == "platinum" or goods_paid >= FREE_SHIPPING_THRESHOLD) else SHIPPING_FEE
        )
        total = goods_paid + shipping
        addr = {k: user[k] for k in ("province", "province_en", "city", "city_en", "district", "district_en", "street")}
        o: dict[str, Any] = {
            "order_id": None,
            "user_id": user["user_id"],
            "status": None,
            "created_at": created,
            "payment_expires_at": None,
            "paid_at": None,
            "items": items,
            "subtotal": subtotal,
            "discount": discount,
            "coupon_code": coupon.code if coupon else None,
            "shipping_fee": shipping,
            "total": total,
            "payment_method": None,
            "installments": None,
            "address": {"recipient": user["name"], "phone": user["phone"], **addr},
            "carrier": None,
            "tracking_number": None,
            "shipped_at": None,
            "delivered_at": None,
            "completed_at": None,
            "cancelled_at": None,
            "cancel_reason": None,
            "refund": None,
            "after_sale": None,
            "invoice": None,
            "buyer_note": None,
        }
        sim = Sim(o)
        ok = self._lifecycle(sim, status, user, addr, variant)
        if not ok or o["status"] != status:
            return None
        if status not in ("pending_payment", "cancelled"):
            self._invoice(o, user)
        return sim

    def _pay(self, o: dict[str, Any]) -> None:
        rng = self.rng
        o["paid_at"] = o["created_at"] + timedelta(seconds=int(min(1500, rng.expovariate(1 / 150)) + 12))
        total = o["total"]
        r = rng.random()
        if total >= HUABEI_MIN and r < (0.38 if total >= 1000 else 0.18):
            o["payment_method"] = "huabei_installment"
            o["installments"] = rng.choices([3, 6, 12], [45, 35, 20])[0]
        elif total <= 1000 and rng.random() < 0.05:
            o["payment_method"] = "gift_card_balance"
        else:
            o["payment_method"] = rng.choices(["alipay", "wechat_pay", "unionpay_card"], [46, 42, 12])[0]

    def _lifecycle(
        self, sim: Sim, target: str, user: dict[str, Any], addr: dict[str, Any], variant: str | None
    ) -> bool:
        rng = self.rng
        o = sim.order
        created = o["created_at"]
        # ---- unpaid paths
        if target == "pending_payment" or (
            target == "cancelled" and variant in (None, "unpaid") and rng.random() < 0.5 and variant != "paid"
        ):
            if target == "pending_payment":
                o["payment_expires_at"] = created + PAYMENT_TIMEOUT
                o["status"] = "pending_payment" if AS_OF < created + PAYMENT_TIMEOUT else None
                return True
            if rng.random() < 0.55:
                o["cancelled_at"], code = created + PAYMENT_TIMEOUT, "payment_timeout"
            else:
                o["cancelled_at"] = created + rng.hours(0.05, 5)
                code = rng.choice(
                    ["changed_mind", "wrong_address", "duplicate_order", "forgot_coupon", "wrong_variant"]
                )
            o["cancel_reason"] = {"code": code, "zh": CANCEL_REASONS[code][0], "en": CANCEL_REASONS[code][1]}
            o["status"] = "cancelled" if o["cancelled_at"] <= AS_OF else None
            return True
        self._pay(o)
        paid = o["paid_at"]
        proc, shipped = self.dispatch_times(paid, o["items"])
        if target == "cancelled":  # paid, cancelled before shipment, refunded automatically
            o["cancelled_at"] = rng.between(paid + timedelta(minutes=3), shipped - timedelta(minutes=10))
            code = rng.choice(["changed_mind", "wrong_address", "duplicate_order", "wrong_variant"])
            o["cancel_reason"] = {"code": code, "zh": CANCEL_REASONS[code][0], "en": CANCEL_REASONS[code][1]}
            o["refund"] = {
                "amount": o["total"],
                "refunded_at": o["cancelled_at"] + rng.hours(0.02, 0.4),
                "channel": o["payment_method"],
            }
            if o["refund"]["refunded_at"] > AS_OF:
                return False
            o["status"] = "cancelled"
            return True
        if AS_OF < proc:
            o["status"] = "paid"
            return True
        if AS_OF < shipped:
            o["status"] = "processing"
            return True
        carrier = "SF" if o["total"] >= SF_THRESHOLD else rng.choices(["JD", "ZTO"], [55, 45])[0]
        if variant == "lost":
            carrier = "ZTO"
        weather = target == "in_transit" and variant == "weather"
        evs = outbound_events(rng, carrier, addr, shipped, weather=weather, lost=(variant == "lost"))
        o["carrier"], o["tracking_number"], o["shipped_at"] = carrier, self.tracking(carrier), shipped
        sim.shipments.append(
            {"tracking_number": o["tracking_number"], "carrier": carrier, "direction": "outbound", "events": evs}
        )
        departed = next(e.t for e in evs if e.code == "DEPARTED")
        if AS_OF < departed:
            o["status"] = "shipped"
            return True
        if variant == "lost":
            if evs[-1].code != "EXCEPTION":
                return False
            last = evs[-1].t
            req = last + rng.hours(1, 5)
            refunded_at = req + rng.hours(2, 20)
            if refunded_at > AS_OF:
                return False
            amount = o["total"]
            o["after_sale"] = self._after_sale_base(
                o,
                "refund_only",
                "lost_in_transit",
                req,
                req + rng.hours(0.2, 1),
                [(i, i["qty"]) for i in o["items"]],
                amount,
            )
            o["after_sale"]["status"] = "refunded"
            o["refund"] = {"amount": amount, "refunded_at": refunded_at, "channel": o["payment_method"]}
            o["status"] = "refunded"
            return True
        ofd = next(e.t for e in evs if e.code == "OUT_FOR_DELIVERY")
        delivered = evs[-1].t
        if AS_OF < ofd:
            o["status"] = "in_transit"
            return weather == any(e.code == "EXCEPTION" for e in evs if e.t <= AS_OF)
        if AS_OF < delivered:
            o["status"] = "out_for_delivery"
            return True
        o["delivered_at"] = delivered
        confirm = delivered + (rng.hours(2, 6 * 24) if rng.random() < 0.5 else AUTO_CONFIRM)
        if target in ("delivered", "completed"):
            o["completed_at"] = confirm if confirm <= AS_OF else None
            o["status"] = "completed" if o["completed_at"] else "delivered"
            return True
        # ---- after-sales
        return self._after_sales(sim, target, user, addr, variant, confirm)

    def _after_sale_base(
        self,
        o: dict[str, Any],
        kind: str,
        reason: str,
        req: datetime,
        approved: datetime,
        lines: list[tuple[dict[str, Any], int]],
        refund_amount: Decimal | None,
    ) -> dict[str, Any]:
        return {
            "id": None,
            "type": kind,
            "status": None,
            "reason": {"code": reason, "zh": REASONS[reason][0], "en": REASONS[reason][1]},
            "detail": None,
            "requested_at": req,
            "approved_at": approved,
            "items": [{"sku": i["sku"], "qty": q, "color": i["color"], "size": i["size"]} for i, q in lines],
            "refund_amount": refund_amount,
            "return_carrier": None,
            "return_tracking_number": None,
            "return_received_at": None,
            "replacement_items": None,
            "replacement_carrier": None,
            "replacement_tracking_number": None,
            "replacement_shipped_at": None,
            "replacement_delivered_at": None,
        }

    def _after_sales(
        self, sim: Sim, target: str, user: dict[str, Any], addr: dict[str, Any], variant: str | None, confirm: datetime
    ) -> bool:
        rng = self.rng
        o = sim.order
        delivered = o["delivered_at"]
        d0 = delivered.date()
        items = o["items"]
        is_exchange = target.startswith("exchange")
        returnable_all = all(self.by_sku[i["sku"]]["returnable"] == "true" for i in items)
        if is_exchange:
            swappable = [
                i
                for i in items
                if self.by_sku[i["sku"]]["returnable"] == "true"
                and (len(self.by_sku[i["sku"]]["sizes_l"]) > 1 or len(self.by_sku[i["sku"]]["colors_l"]) > 1)
            ]
            if swappable and rng.random() < 0.6 and variant != "quality":
                line = rng.choice(swappable)
                p = self.by_sku[line["sku"]]
                reason = "size_not_fit" if len(p["sizes_l"]) > 1 else "no_reason_exchange"
            else:
                line = rng.choice(items)
                p = self.by_sku[line["sku"]]
                reason = "quality_issue"
            lines = [(line, line["qty"])]
            new_color, new_size = line["color"], line["size"]
            if reason == "size_not_fit":
                idx = p["sizes_l"].index(line["size"])
                new_size = p["sizes_l"][idx + 1] if idx + 1 < len(p["sizes_l"]) else p["sizes_l"][idx - 1]
            elif reason == "no_reason_exchange":
                new_color = rng.choice([c for c in p["colors_l"] if c != line["color"]])
        else:
            if variant == "quality":
                reason = rng.choice(["quality_issue", "quality_issue", "wrong_item", "damaged_in_transit"])
            elif variant == "no_reason" or (returnable_all and rng.random() < 0.6):
                reason = "no_reason"
            else:
                reason = rng.choice(["quality_issue", "quality_issue", "wrong_item", "damaged_in_transit"])
            if reason == "no_reason" and not returnable_all:
                cand = [i for i in items if self.by_sku[i["sku"]]["returnable"] == "true"]
                if not cand:
                    return False
                lines = [(rng.choice(cand), None)]
            elif len(items) > 1 and rng.random() < 0.35:
                lines = [(rng.choice(items), None)]
            else:
                lines = [(i, None) for i in items]
            lines = [(i, i["qty"]) for i, _ in lines]
        no_reason = reason in ("no_reason", "no_reason_exchange", "size_not_fit")
        window_end = at(d0 + timedelta(days=(RETURN_DAYS if no_reason else QUALITY_DAYS) + 1), 0) - timedelta(seconds=1)
        if reason == "damaged_in_transit":
            window_end = delivered + DAMAGE_REPORT
        req = rng.between(delivered + timedelta(hours=1), window_end)
        if req > AS_OF:
            return False
        if confirm < req:
            o["completed_at"] = confirm  # confirmed receipt before asking for after-sales
        if no_reason:  # approved automatically
            approved = req + rng.hours(0.01, 0.08)
        else:  # reviewed by an agent during support hours (09:00-21:00), within 24 hours
            approved = req + rng.hours(0.5, 6)
            h = approved.hour + approved.minute / 60
            if not 9.0 <= h < 21.0:
                approved = at(approved.date() + timedelta(days=1 if h >= 21 else 0), rng.uniform(9.0, 11.0))
        refund_amount = None
        if not is_exchange:
            refund_amount = refund_for(o, [i for i, _ in lines], include_shipping=not no_reason)
        a = self._after_sale_base(
            o, "exchange" if is_exchange else "return", reason, req, approved, lines, refund_amount
        )
        if reason in ("quality_issue",):
            dz, de = quality_detail(rng, lines[0][0]["sku"])
            a["detail"] = {"zh": dz, "en": de}
        elif reason == "wrong_item":
            a["detail"] = {
                "zh": "收到的商品型号或颜色与订单不符",
                "en": "Received a different model or colour from the one ordered",
            }
        elif reason == "damaged_in_transit":
            a["detail"] = {"zh": "外箱被压扁，商品有磕碰", "en": "Outer box was crushed and the item is dented"}
        elif reason == "size_not_fit":
            up = p["sizes_l"].index(new_size) > p["sizes_l"].index(line["size"])
            a["detail"] = (
                {"zh": f"尺码偏小，想换大一码（{new_size}）", "en": f"Runs small, would like one size up ({new_size})"}
                if up
                else {
                    "zh": f"尺码偏大，想换小一码（{new_size}）",
                    "en": f"Runs large, would like one size down ({new_size})",
                }
            )
        elif reason == "no_reason_exchange":
            a["detail"] = {
                "zh": f"想换成{new_color.split('/')[0]}",
                "en": f"Would like {new_color.split('/')[1]} instead",
            }
        o["after_sale"] = a
        if AS_OF < approved:
            a["status"] = "pending_review"
            o["status"] = target if target in ("return_requested", "exchange_requested") else None
            return o["status"] is not None
        # return shipment (Lumo books a free pickup for quality cases and platinum members)
        lumo_pays = (not no_reason) or user["member_tier"] == "platinum"
        booked = approved + (rng.hours(0.2, 2) if lumo_pays else rng.hours(1, 60))
        rc = "SF" if lumo_pays else rng.choice(["SF", "JD", "ZTO"])
        if booked > AS_OF:
            a["status"] = "approved_awaiting_return"
            o["status"] = target if target in ("return_requested", "exchange_requested") else None
            return o["status"] is not None
        revs = return_events(rng, rc, addr, booked)
        a["return_carrier"], a["return_tracking_number"] = rc, self.tracking(rc)
        sim.shipments.append(
            {"tracking_number": a["return_tracking_number"], "carrier": rc, "direction": "return", "events": revs}
        )
        received = revs[-1].t
        if AS_OF < received:
            a["status"] = "approved_awaiting_return" if AS_OF < revs[1].t else "return_in_transit"
            o["status"] = target if target in ("return_requested", "exchange_requested") else None
            return o["status"] is not None
        a["return_received_at"] = received
        inspected = received + rng.hours(2, 28)
        if not 9.0 <= inspected.hour + inspected.minute / 60 <= 19.0:  # warehouse after-sales team hours
            nxt = inspected.date() + timedelta(days=1 if inspected.hour >= 19 else 0)
            inspected = at(nxt, rng.uniform(9.0, 12.0))
        if not is_exchange:
            if AS_OF < inspected:
                a["status"] = "received_inspecting"
                o["status"] = "returned" if target == "returned" else None
                return o["status"] is not None
            a["status"] = "refunded"
            o["refund"] = {"amount": refund_amount, "refunded_at": inspected, "channel": o["payment_method"]}
            o["status"] = "refunded" if target == "refunded" else None
            return o["status"] is not None
        # exchange: ship a replacement after inspection
        line = lines[0][0]
        a["replacement_items"] = [{"sku": line["sku"], "qty": line["qty"], "color": new_color, "size": new_size}]
        if AS_OF < inspected:
            a["status"] = "received_inspecting"
            o["status"] = "exchange_requested" if target == "exchange_requested" else None
            return o["status"] is not None
        xc = "SF"
        xevs = outbound_events(rng, xc, addr, inspected)
        a["replacement_carrier"], a["replacement_tracking_number"] = xc, self.tracking(xc)
        a["replacement_shipped_at"] = inspected
        sim.shipments.append(
            {
                "tracking_number": a["replacement_tracking_number"],
                "carrier": xc,
                "direction": "exchange_outbound",
                "events": xevs,
            }
        )
        if AS_OF < xevs[-1].t:
            a["status"] = "replacement_shipped"
            o["status"] = "exchange_requested" if target == "exchange_requested" else None
            return o["status"] is not None
        a["replacement_delivered_at"] = xevs[-1].t
        a["status"] = "completed"
        o["status"] = "exchanged" if target == "exchanged" else None
        return o["status"] is not None

    def _invoice(self, o: dict[str, Any], user: dict[str, Any]) -> None:
        rng = self.rng
        uid = user["user_id"]
        r = rng.random()
        if uid in COMPANIES and r < 0.45:
            name, tax = COMPANIES[uid]
            special = rng.random() < 0.4 and o["delivered_at"] is not None
            inv = {
                "type": "vat_special" if special else "e_normal",
                "title_type": "company",
                "title": name,
                "tax_id": tax,
                "status": "pending",
                "requested_at": None,
                "issued_at": None,
                "invoice_no": None,
            }
        elif r < 0.3:
            inv = {
                "type": "e_normal",
                "title_type": "personal",
                "title": "个人",
                "tax_id": None,
                "status": "pending",
                "requested_at": None,
                "issued_at": None,
                "invoice_no": None,
            }
        else:
            return
        o["invoice"] = inv
        if inv["type"] == "vat_special":
            req = rng.between(o["delivered_at"] + timedelta(hours=2), o["delivered_at"] + timedelta(days=20))
            day = req.date() + timedelta(days=rng.randint(1, 3))
            while day.weekday() >= 5:
                day += timedelta(days=1)
            issued = at(day, rng.uniform(10, 17))
        else:
            req = o["created_at"]
            issued = o["delivered_at"] + rng.hours(1, 40) if o["delivered_at"] else None
        inv["requested_at"] = req
        if req > AS_OF:
            o["invoice"] = None
            return
        if issued is not None and issued <= AS_OF:
            inv["status"], inv["issued_at"] = "issued", issued
            inv["invoice_no"] = "26" + ("31" if inv["type"] == "e_normal" else "32") + rng.digits(16)
        refund = o["refund"]
        if refund and inv["status"] == "issued":
            inv["status"] = "reversed" if refund["amount"] >= o["total"] - o["shipping_fee"] else "reissued"
        elif refund and inv["status"] == "pending":
            inv["status"] = "cancelled"

    # -- driver
    def add(
        self,
        status: str,
        *,
        force_items: list[tuple[str, int]] | None = None,
        user_pred: Any = None,
        variant: str | None = None,
        pred: Any = None,
        tries: int = 20000,
    ) -> dict[str, Any]:
        for _ in range(tries):
            snapshot = Counter(self.coupon_use)
            sim = self.simulate(status, force_items, user_pred, variant)
            if sim is None or (pred is not None and not pred(sim.order)):
                self.coupon_use = snapshot
                continue
            self.orders.append(sim)
            return sim.order
        raise RuntimeError(f"could not generate an order with status {status} ({variant})")

    def run(self) -> None:
        g = self
        d_as = AS_OF.date()
        zh_user = lambda u: u["preferred_lang"] == "zh" and u["user_id"] not in g.fixture_users  # noqa: E731
        en_user = lambda u: u["preferred_lang"] == "en" and u["user_id"] not in g.fixture_users  # noqa: E731
        fresh = lambda u: u["user_id"] not in g.fixture_users  # noqa: E731
        fx: dict[str, dict[str, Any]] = {}

        def take(key: str, o: dict[str, Any], note_zh: str, note_en: str) -> None:
            fx[key] = {"order": o, "zh": note_zh, "en": note_en}
            g.fixture_users.add(o["user_id"])

        take(
            "delivered_in_window",
            g.add(
                "delivered",
                force_items=[("LM-AU-001", 1)],
                user_pred=zh_user,
                pred=lambda o: o["delivered_at"] and 2 <= (d_as - o["delivered_at"].date()).days <= 3,
            ),
            "已签收 2–3 天，在 7 天无理由退货期内（降噪耳机，可退）",
            "Delivered 2-3 days ago, inside the 7-day no-reason return window (ANC earbuds, returnable)",
        )
        take(
            "delivered_outside_window",
            g.add(
                "delivered",
                force_items=[("LM-KT-001", 1)],
                user_pred=zh_user,
                pred=lambda o: o["delivered_at"] and 10 <= (d_as - o["delivered_at"].date()).days <= 12,
            ),
            "已签收 10–12 天，超出 7 天无理由退货期，但仍在 15 天质量问题换货期内（空气炸锅）",
            "Delivered 10-12 days ago: outside the 7-day no-reason window, inside the 15-day quality window",
        )
        take(
            "delivered_in_window_en",
            g.add(
                "delivered",
                force_items=[("LM-WR-003", 1), ("LM-WR-006", 1)],
                user_pred=en_user,
                pred=lambda o: o["delivered_at"] and 1 <= (d_as - o["delivered_at"].date()).days <= 4,
            ),
            "英文用户，已签收 1–4 天，在无理由退货期内",
            "English-speaking customer, delivered 1-4 days ago, inside the no-reason window",
        )
        take(
            "delivered_non_returnable",
            g.add(
                "delivered",
                force_items=[("LM-AU-008", 1)],
                user_pred=zh_user,
                pred=lambda o: o["delivered_at"] and 1 <= (d_as - o["delivered_at"].date()).days <= 4,
            ),
            "定制刻字耳机，签收不足 7 天但不支持无理由退货（质量问题仍可换货/保修）",
            "Custom-engraved earbuds delivered <7 days ago; no no-reason return (quality issues still covered)",
        )
        take(
            "completed_warranty_only",
            g.add(
                "completed",
                force_items=[("LM-PC-004", 1)],
                user_pred=zh_user,
                pred=lambda o: o["delivered_at"] and 30 <= (d_as - o["delivered_at"].date()).days <= 60,
            ),
            "已完成，签收超过 15 天：不能退换，只能走 12 个月保修",
            "Completed, delivered more than 15 days ago: no return or exchange, 12-month warranty only",
        )
        take(
            "shipped",
            g.add("shipped", user_pred=zh_user),
            "已发货（运单已生成/已揽收，尚未离开始发站）",
            "Shipped: waybill created or picked up, not yet departed the origin hub",
        )
        take(
            "in_transit",
            g.add("in_transit", user_pred=zh_user, pred=lambda o: ZONE_OF[o["address"]["province"]] in ("B", "C")),
            "运输中",
            "In transit",
        )
        take(
            "in_transit_delayed",
            g.add("in_transit", variant="weather", user_pred=lambda u: fresh(u) and u["province"] in SNOW_PROVINCES),
            "运输中，目的地因降雪延误（最新轨迹为 EXCEPTION）",
            "In transit, delayed by snow at the destination hub (latest event is EXCEPTION)",
        )
        take(
            "out_for_delivery",
            g.add("out_for_delivery", user_pred=en_user),
            "派送中（英文用户）",
            "Out for delivery (English-speaking customer)",
        )
        take(
            "pending_payment",
            g.add("pending_payment", user_pred=zh_user),
            "待付款，24 小时内未付款将自动取消",
            "Awaiting payment; cancelled automatically if unpaid within 24 hours",
        )
        take(
            "cancelled",
            g.add("cancelled", variant="paid", user_pred=zh_user),
            "付款后发货前取消，已原路退款",
            "Cancelled after payment before shipment, refunded to the original method",
        )
        take(
            "processing",
            g.add("processing", user_pred=zh_user),
            "仓库处理中（打包中，未发货）",
            "Processing in the warehouse (packing, not shipped yet)",
        )
        take(
            "paid",
            g.add("paid", user_pred=zh_user),
            "已付款，等待仓库接单（付款后约 10–40 分钟进入处理中）",
            "Paid, waiting for the warehouse to pick it up (moves to processing 10-40 minutes after payment)",
        )
        take(
            "return_requested",
            g.add("return_requested", variant="no_reason", user_pred=zh_user),
            "已申请七天无理由退货",
            "7-day no-reason return requested",
        )
        take(
            "refunded",
            g.add(
                "refunded",
                variant="quality",
                user_pred=zh_user,
                pred=lambda o: (
                    o["after_sale"]["reason"]["code"] == "quality_issue"
                    and o["shipping_fee"] > 0
                    and o["refund"]["amount"] == o["total"]
                ),
            ),
            "质量问题整单退货，已全额退款（含 ¥8 运费）",
            "Whole order returned for a quality issue, refunded in full including the ¥8 shipping fee",
        )
        take(
            "lost_parcel",
            g.add("refunded", variant="lost", user_pred=zh_user),
            "快递丢件，已全额退款（最新轨迹为 EXCEPTION，无签收时间）",
            "Parcel lost by the carrier, fully refunded (latest event EXCEPTION, never delivered)",
        )
        take(
            "returned",
            g.add("returned", user_pred=zh_user),
            "退货已入库，质检后 48 小时内退款",
            "Return received at the warehouse; refund within 48 hours after inspection",
        )
        take("exchange_requested", g.add("exchange_requested", user_pred=zh_user), "换货处理中", "Exchange in progress")
        take(
            "exchanged",
            g.add("exchanged", user_pred=en_user),
            "换货已完成（英文用户），新商品已签收",
            "Exchange completed (English-speaking customer), replacement delivered",
        )
        take(
            "huabei_installment",
            g.add(
                "completed",
                user_pred=fresh,
                pred=lambda o: o["payment_method"] == "huabei_installment" and o["installments"] == 12,
            ),
            "花呗 12 期分期付款的已完成订单",
            "Completed order paid with Huabei in 12 instalments",
        )
        take(
            "platinum_free_shipping",
            g.add(
                "completed",
                user_pred=lambda u: fresh(u) and u["member_tier"] == "platinum",
                pred=lambda o: o["subtotal"] - o["discount"] < FREE_SHIPPING_THRESHOLD,
            ),
            "铂金会员，订单不足 ¥99 仍免运费",
            "Platinum member: free shipping although the order is under ¥99",
        )
        self.fixtures = fx

        # fill the remaining quota in a fixed order
        have = Counter(s.order["status"] for s in self.orders)
        plan = []
        for st, n in STATUS_QUOTA.items():
            plan += [st] * max(0, n - have[st])
        self.rng.shuffle(plan)
        weather_done = False
        for st in plan:
            variant = None
            if st == "in_transit" and not weather_done and self.rng.random() < 0.3:
                variant, weather_done = "weather", True
            self.add(st, variant=variant)

    # -- numbering and output
    def finalize(self) -> None:
        rng = self.rng
        self.orders.sort(key=lambda s: s.order["created_at"])
        seq: dict[str, int] = {}
        for s in self.orders:
            ym = s.order["created_at"].strftime("%y%m")
            seq[ym] = seq.get(ym, rng.randint(1, 40)) + rng.randint(3, 17)
            s.order["order_id"] = f"LM{ym}{seq[ym]:04d}"
        as_seq: dict[str, int] = {}
        for s in sorted(self.orders, key=lambda s: (s.order["after_sale"] or {}).get("requested_at") or AS_OF):
            a = s.order["after_sale"]
            if a:
                d = a["requested_at"].strftime("%y%m%d")
                as_seq[d] = as_seq.get(d, 0) + 1
                a["id"] = f"AS{d}{as_seq[d]:03d}"
        for s in self.orders:
            o = s.order
            if o["status"] in ("paid", "processing", "pending_payment") or rng.random() < 0.08:
                if rng.random() < 0.3:
                    lang = self.user_by_id[o["user_id"]]["preferred_lang"]
                    o["buyer_note"] = rng.choice(BUYER_NOTES_ZH if lang == "zh" else BUYER_NOTES_EN)


def refund_for(o: dict[str, Any], lines: list[dict[str, Any]], include_shipping: bool) -> Decimal:
    """Refund for returned order lines: line amount minus its pro-rata share of the coupon discount
    (the last line of the order absorbs rounding), plus the shipping fee for seller-fault returns of the
    whole order."""
    shares = discount_shares(o)
    amount = sum(
        (i["unit_price"] * i["qty"] - shares[idx] for idx, i in enumerate(o["items"]) if i in lines), Decimal("0.00")
    )
    if include_shipping and len(lines) == len(o["items"]):
        amount += o["shipping_fee"]
    return money(amount)


def discount_shares(o: dict[str, Any]) -> list[Decimal]:
    items, disc, sub = o["items"], o["discount"], o["subtotal"]
    shares, acc = [], Decimal("0.00")
    for idx, i in enumerate(items):
        if idx == len(items) - 1:
            shares.append(disc - acc)
        else:
            s = money(disc * i["unit_price"] * i["qty"] / sub) if sub else money(0)
            shares.append(s)
            acc += s
    return shares


# ---------------------------------------------------------------- serialisation
_NUM = re.compile(r'"__DEC__(-?\d+\.\d\d)"')


def to_jsonable(x: Any) -> Any:
    if isinstance(x, Decimal):
        return f"__DEC__{x:.2f}"
    if isinstance(x, datetime):
        return iso(x)
    if isinstance(x, dict):
        return {k: to_jsonable(v) for k, v in x.items()}
    if isinstance(x, list):
        return [to_jsonable(v) for v in x]
    return x


def dumps(x: Any) -> str:
    """JSON with money as numbers that always carry two decimals (e.g. 399.00)."""
    return _NUM.sub(r"\1", json.dumps(to_jsonable(x), ensure_ascii=False, separators=(", ", ": ")))


def write_outputs(g: Generator) -> None:
    backend = ROOT / "backend"
    backend.mkdir(exist_ok=True)
    cols = [
        "user_id",
        "name",
        "phone",
        "email",
        "member_tier",
        "preferred_lang",
        "registered_at",
        "birthday",
        "points_balance",
        "province",
        "city",
        "district",
        "street",
        "province_en",
        "city_en",
        "district_en",
    ]
    with open(backend / "users.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, lineterminator="\n", extrasaction="ignore")
        w.writeheader()
        for u in g.users:
            w.writerow({**u, "registered_at": iso(u["registered_at"])})
    with open(backend / "orders.jsonl", "w", encoding="utf-8") as f:
        for s in g.orders:
            for i in s.order["items"]:
                i["unit_price"] = money(i["unit_price"])
            f.write(dumps(s.order) + "\n")
    ships = []
    for s in g.orders:
        for sh in s.shipments:
            evs = [e for e in sh["events"] if e.t <= AS_OF]
            if not evs:
                continue
            ships.append(
                (
                    evs[0].t,
                    {
                        "tracking_number": sh["tracking_number"],
                        "carrier": sh["carrier"],
                        "carrier_name_zh": CARRIERS[sh["carrier"]]["zh"],
                        "carrier_name_en": CARRIERS[sh["carrier"]]["en"],
                        "order_id": s.order["order_id"],
                        "direction": sh["direction"],
                        "events": [
                            {
                                "time": e.t,
                                "status": e.code,
                                "location_zh": e.loc_zh,
                                "location_en": e.loc_en,
                                "description_zh": e.zh,
                                "description_en": e.en,
                            }
                            for e in evs
                        ],
                    },
                )
            )
    ships.sort(key=lambda x: (x[0], x[1]["tracking_number"]))
    with open(backend / "logistics_events.jsonl", "w", encoding="utf-8") as f:
        for _, rec in ships:
            f.write(dumps(rec) + "\n")
    write_fixtures(g)


def write_fixtures(g: Generator) -> None:
    def q(s: str) -> str:
        return json.dumps(s, ensure_ascii=False)

    lines = [
        "# Generated by tools/generate_backend.py — do not edit by hand.",
        "# Named orders for tests and docs. `as_of` is the snapshot time the data was generated for:",
        '# treat it as "now" when judging return windows, payment deadlines and delivery progress.',
        f"as_of: {q(iso(AS_OF))}",
        "orders:",
    ]
    for key, f in g.fixtures.items():
        o = f["order"]
        u = g.user_by_id[o["user_id"]]
        lines += [
            f"  {key}:",
            f"    order_id: {o['order_id']}",
            f"    user_id: {o['user_id']}",
            f"    phone: {q(u['phone'])}",
            f"    name: {q(u['name'])}",
            f"    lang: {u['preferred_lang']}",
            f"    status: {o['status']}",
        ]
        if o["tracking_number"]:
            lines.append(f"    tracking_number: {q(o['tracking_number'])}")
        if o["delivered_at"]:
            lines.append(f"    delivered_at: {q(iso(o['delivered_at']))}")
        lines += [f"    note_zh: {q(f['zh'])}", f"    note_en: {q(f['en'])}"]
    (ROOT / "fixtures.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    g = Generator()
    g.run()
    g.finalize()
    write_outputs(g)
    c = Counter(s.order["status"] for s in g.orders)
    print(f"users={len(g.users)} orders={len(g.orders)} shipments={sum(len(s.shipments) for s in g.orders)}")
    print(", ".join(f"{k}={v}" for k, v in sorted(c.items())))


if __name__ == "__main__":
    main()
