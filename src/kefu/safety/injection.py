"""Prompt-injection and jailbreak detection: weighted patterns first, an embedding classifier for the rest.

The patterns run over every reading of a message (kefu.safety.normalise: spelling tricks undone, payloads decoded)
and decide the clear cases in microseconds. Besides known phrasings they score structural signals — text claiming
authority or a rule change, invented conversation memory, instructions to an AI inside pasted notes, references to
the assistant's own hidden text — each weak alone, deciding together. Messages the patterns find suspicious but do
not decide go to a nearest-neighbour classifier over labelled examples shipped as data (injection and benign
look-alikes), embedded once, lazily, on first use — ordinary questions never pay for it.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from kefu.datafiles import load_yaml_model
from kefu.embeddings.base import Embedder, Vectors
from kefu.embeddings.cache import CachedEmbedder
from kefu.safety.normalise import Reading
from kefu.safety.prefilter import PatternSet

EXAMPLES_FILE = Path(__file__).parent / "data" / "injection_examples.yaml"

_I = re.IGNORECASE
_SENTENCE = r"[^.!?。！？\n]"


def _near(first: str, second: str, gap: int = 40) -> str:
    """A pattern for two cues in one sentence, in either order: phrasings vary, the pair stays."""
    return rf"(?:{first}){_SENTENCE}{{0,{gap}}}(?:{second})|(?:{second}){_SENTENCE}{{0,{gap}}}(?:{first})"


# Words for rules and limits, and for their being switched off (en, then zh: near each other, "rule_change").
_RULE_WORDS_EN = (
    r"\b(rules?|polic(y|ies)|guidelines?|limits?|restrictions?|checks?|verification|safeguards?|filters?|protocols?|"
    r"return window)\b"
)
_RULE_OFF_EN = (
    r"\b(suspended|disabled|lifted|removed|revoked|waived|overrid(e|den|ing)|turned off|switched off|paused|void|"
    r"outdated|obsolete|deprecated|superseded|replaced|rewritten|no longer (apply|applies|valid|in effect|in force|"
    r"count|needs?|required|requires?)|don'?t (apply|count) any ?more|(are|is) (now )?(off|cancell?ed))\b"
)
_RULE_WORDS_ZH = r"规则|规定|政策|限制|上限|规矩|审核|核验|核实|校验|风控|检查|守则|质检|流程"
_RULE_OFF_ZH = (
    r"(已经?|都|被|全部|均|暂时|临时|今天|现已|已被)(取消|关闭|暂停|解除|放开|下线|废除|撤销|停用|更新|变更|调整|修改|"
    r"失效|作废)|(取消|关闭|暂停|解除|放开|下线|废除|撤销|停用|改)了|不再适用|不适用了"
)
# Asking for data, and other people's data (near each other: "others_data").
_DISCLOSE = (
    r"\b(disclose|reveal|share|tell me|give me|send me|show me|list|export|output|print|read out|dump|download|"
    r"pull up|here (is|are))\b|告诉我|列一下|列出|导出|发给?我|给我|念|说出"
)
_OTHERS = (
    r"\b(customer|buyer|user|member|shopper|client)s?'? ?(list|records|histories|history|data|database|phone numbers|"
    r"phones|addresses|names|e-?mails|details|contacts)\b|\border histories\b|\b(names|phones?|phone numbers|"
    r"addresses|e-?mails|contacts|details) of (the )?((top|other|all|every|recent) )?(\d+ )?(customers|buyers|users|"
    r"shoppers|people|members)\b|\b(top|recent|latest) (\d+ )?(customers|buyers|users|shoppers)\b|(这些|其他|别的|"
    r"所有|全部|那些)(顾客|客户|用户|买家|会员)|(顾客|客户|买家|用户|会员)(们|名单|列表|数据|资料)|的买家|\b(everyone|"
    r"everybody|all (the )?(people|customers|buyers|users)|people|customers|buyers) who (bought|ordered|purchased|"
    r"reviewed)\b"
)
# Showing text, and the assistant's own hidden text (near each other: "prompt_extraction").
_SHOW = (
    r"\b(show|print|output|reveal|reproduce|repeat|copy|paste|quote|read (out|back)|tell me|give me|dump|display|list|"
    r"what'?s written|what does it say|translate)\b|翻译|念|说出|告诉我|发给?我|复制|粘贴|贴出|打出|输出|给我看|原话|"
    r"照着|写的是什么|写了(些)?什么|内容是什么"
)
_HIDDEN = (
    r"\b(top|start|beginning) of (your|the|this) (memory|context|conversation|session|instructions)\b|"
    r"\bhidden (message|text|note|instructions?)\b|\b(message|text|instructions?) that (shapes?|controls?|governs?|"
    r"guides?) (your|the bot'?s) (replies|answers|behaviou?r|responses)\b|\byour (memory|context window)\b|内部文件|"
    r"内部资料|那份(说明|文件|文档|资料)|你(回答问题)?(所)?依据的|(系统|上级|店家|老板|开发者|公司|平台)给你(的|定的|"
    r"写的|设的)|(最开始|最前面|最上面)的?(那段)?(话|内容|文字)|系统级?(说明|设定|指令)|\byour initial (setup|"
    r"configuration|instructions|message|briefing)\b"
)

# Roles a fake operator message claims to come from.
_STAFF = (
    r"supervisors?|managers?|management|admins?|administrators?|operators?|moderators?|developers?|dev team|"
    r"engineering( team)?|ops( team)?|operations( team)?|head office|headquarters|back ?office|backend|the system|"
    r"platform team|security team|compliance( team)?|customer care management|team lead|store owner|shop owner|"
    r"store manager|shop manager|staff|shift (lead|leader|manager)|team leader|it( team| department)?|qa( team)?|"
    r"quality team|trust team|risk team"
)
# (pattern, weight, reason). A total weight of 1.0 trips the guard.
_RULES: tuple[tuple[re.Pattern[str], float, str], ...] = tuple(
    (re.compile(p, _I), w, r)
    for p, w, r in (
        # overriding the instructions
        (
            r"\b(ignore|disregard|forget|skip|override|bypass|drop)\b.{0,30}\b(previous|prior|above|earlier|all|any|"
            r"your|the|these|those|system|original|initial)\b.{0,20}\b(instruction|rule|prompt|direction|guideline|"
            r"polic(y|ies)|constraint|restriction|setting|context)s?\b",
            1.0,
            "override_instructions",
        ),
        (
            r"(忽略|无视|忘记|忘掉|不要管|别管|跳过|抛开|抛弃|覆盖|绕过|放弃).{0,12}(之前|以上|上面|前面|先前|所有|"
            r"全部|一切|你的|原来|原有|系统|初始)?.{0,6}(指令|指示|规则|设定|提示|要求|限制|约束|命令|人设|身份|政策)",
            1.0,
            "override_instructions",
        ),
        (
            r"\bnew (instructions?|system prompt|task|directives?|persona)\b|\bfrom now on\b.{0,40}\b(you|your)\b",
            1.0,
            "new_instructions",
        ),
        (
            r"(从?现在(起|开始)|接下来|以后).{0,15}(你(就)?(是|要|必须|只能|将)|听我的|按我说的)",
            1.0,
            "new_instructions",
        ),
        (
            r"新的?.{0,4}(指令|指示|设定|系统提示|命令|任务)|(以下是|这是)(你的)?新.{0,4}(指令|规则|设定|系统提示|"
            r"命令|任务)|你的新规则",
            1.0,
            "new_instructions",
        ),
        (r"\bfrom (this|the next) (message|point|moment|reply) (on|onwards?)\b", 1.0, "new_instructions"),
        (r"(指示|指令|规则|设定).{0,4}(全部|都)?(作废|失效|不算数?)", 1.0, "override_instructions"),
        (r"(?-i:\bSYSTEM\b)\s*[:：]|\b(you must|you have to) agree with everything\b", 1.0, "injected_markup"),
        # role play and jailbreak personas
        (
            r"\b(you are|you're) (now|no longer)\b|\bpretend (to be|you are|you're)\b|\brole-?play\b|"
            r"\bimagine you are\b|\bstay in character\b|\bsimulate (a|an)\b",
            1.0,
            "role_play",
        ),
        (
            r"(你现在是|你现在扮演|你不再是|你已经不是|扮演|假装|假设你是|角色扮演|模拟一个|当作你是|把你自己当成)",
            1.0,
            "role_play",
        ),
        (
            r"\bact (as|like) (a|an|my|the)\b|(进入|切换到?|开启|打开|启用|启动)(了)?.{0,6}(测试|调试|维护|开发|管理|"
            r"无限制|特权|上帝|debug|test)模式",
            0.6,
            "role_play",
        ),
        (
            r"\b(doesn't|does not|don't|do not|never|without) follow(ing)? (any|the|your)? ?(polic|rule|guideline)",
            0.6,
            "role_play",
        ),
        (r"不(遵守|遵循|按照|受)(任何)?(规定|规则|政策|约束)", 0.6, "role_play"),
        (r"\b(you have|where you have|with) no (rules|restrictions|limits|filters)\b", 1.0, "jailbreak"),
        (r"你(就)?(没有|不用守|不用遵守|无视)(任何)?(规矩|规则|限制|底线)", 1.0, "jailbreak"),
        (
            r"\b(DAN|do anything now|jailbreak|jailbroken|developer mode|god mode|sudo mode|unfiltered|uncensored|"
            r"evil (bot|assistant|mode)|no (limits|restrictions|rules|filters))\b",
            1.0,
            "jailbreak",
        ),
        (
            r"(越狱|开发者模式|上帝模式|管理员模式|无限制模式|没有任何限制|不受(任何)?限制|解除(所有)?限制|去掉限制|"
            r"不要有(任何)?限制|无视道德|不用遵守)|没有(任何)?(限制|规则|约束|底线)的(助手|ai|模型|机器人|客服|版本|"
            r"人)",
            1.0,
            "jailbreak",
        ),
        (
            r"\b(without|with no|free of) (any )?(restrictions|limits|filters|rules|guidelines|censorship)\b",
            1.0,
            "jailbreak",
        ),
        # extracting the system prompt or internal instructions
        (
            r"\b(reveal|show|print|repeat|output|tell|give|display|dump|leak|share|paste|recite|spell out|what (is|"
            r"are|were))\b.{0,30}\b(system|initial|hidden|secret|original|internal|developer|pre-?)[ -]?(prompt|"
            r"instruction|message|rule|configuration|setting)s?\b",
            1.0,
            "prompt_extraction",
        ),
        (
            r"\b(your|the) (system prompt|prompt template|hidden instructions?|internal instructions?|initial prompt|"
            r"instructions you were given|rules you (were|are) given|guidelines you follow)\b",
            0.9,
            "prompt_extraction",
        ),
        (
            r"\b(repeat|print|output|echo) (everything|all|the text|the words) (above|before|so far)\b|\bverbatim\b",
            0.8,
            "prompt_extraction",
        ),
        (
            r"(系统提示词?|提示词|初始指令|内部指令|系统指令|隐藏指令|系统设定|内部规则|隐藏规则|秘密规则|你的设定|"
            r"你的指令|你的规则|原始指令|prompt|预设).{0,12}(是什么|发给我|告诉我|输出|打印|显示|复述|重复|给我看|"
            r"写出来|念出来|贴出来|全部)",
            1.0,
            "prompt_extraction",
        ),
        (
            r"(告诉我|输出|打印|显示|复述|重复|泄露|透露|公开|列出|给我看|说出|念出|贴出).{0,10}(你的|系统|全部|所有|"
            r"完整|原始|初始|内部).{0,6}(提示词|指令|设定|规则|prompt|配置|说明)",
            1.0,
            "prompt_extraction",
        ),
        (r"(上面|以上|之前|前面)(的)?(所有)?(内容|文字|话).{0,6}(重复|复述|原样|逐字|输出)", 1.0, "prompt_extraction"),
        (r"(打印|输出|显示|告诉我|给我看)(一下)?(你的)?(系统提示|系统设定|初始设定|提示词)", 1.0, "prompt_extraction"),
        (
            r"\b(repeat|print|output|echo|copy)\b.{0,25}\b(above|before this|so far|starting with)\b",
            1.0,
            "prompt_extraction",
        ),
        (
            r"\b(rules|guidelines|instructions|directions)\b (you are|you're|you were|you) (given|told|following|"
            r"follow)\b",
            1.0,
            "prompt_extraction",
        ),
        # injected markup pretending to be the system or a tool
        (
            r"<\|?(im_start|im_end|system|endoftext)\|?>|\[/?(INST|SYS)\]|<<SYS>>|^\s*(system|assistant)\s*[:：]|"
            r"#{2,}\s*(system|instruction)|\bBEGIN (SYSTEM|ADMIN)\b",
            1.0,
            "injected_markup",
        ),
        (
            r"(系统消息|系统通知|管理员(指令|命令|消息)|来自(系统|管理员|开发者)的(消息|指令|通知))\s*[:：]",
            1.0,
            "injected_markup",
        ),
        (
            r"\b(admin|administrator|developer|system|openai|anthropic)\s*(override|message|notice|command)\s*[:：]",
            1.0,
            "injected_markup",
        ),
        (
            r"\b(i am|i'm) (your|the|an?) (developer|admin|administrator|creator|owner|engineer)\b|我是(你的|"
            r"这个系统的|系统|平台的)?(开发者|管理员|开发人员|工程师|老板|创造者)",
            0.7,
            "authority_claim",
        ),
        # other customers' data
        (
            r"\b(another|other|all|every|someone else'?s?|a different)\b.{0,20}\b(customer|user|buyer|member|person|"
            r"people)s?'?\b[^,.;!?]{0,40}\b(phone|number|address|orders?|emails?|details|data|info|information|"
            r"records?|id|card|name)s?\b",
            1.0,
            "others_data",
        ),
        (
            r"\b(list|dump|export|show|give)\b.{0,15}\b(all|every|the)\b.{0,10}\b(customers|users|members|orders|"
            r"phone numbers|addresses|emails)\b",
            1.0,
            "others_data",
        ),
        (
            r"(其他|其它|别的|所有|全部|别人|他人|另一个|另外一个|某个|任意|隔壁)(的)?(客户|顾客|用户|会员|买家|"
            r"人).{0,12}(手机|电话|号码|地址|订单|信息|资料|身份证|银行卡|邮箱|姓名|名字|数据|记录)",
            1.0,
            "others_data",
        ),
        (
            r"(别人|他人|其他人|朋友|同事|邻居|前任|老公|老婆|陌生人)(的)?.{0,6}(手机号|电话号码|住址|家庭地址|"
            r"身份证号?|银行卡号?)",
            0.9,
            "others_data",
        ),
        (
            r"(查|告诉我|给我|导出|列出).{0,8}(用户|客户|会员)\s*(id|ID|编号)?\s*[A-Za-z]?\d{3,}.{0,8}(的)?(手机|电话|"
            r"地址|订单|信息|资料)",
            1.0,
            "others_data",
        ),
        (
            r"\b(user|customer|member)\s*(id\s*)?#?\s*[A-Za-z]?\d{3,}'?s?\b.{0,25}\b(phone|address|email|details|info|"
            r"orders?)\b",
            1.0,
            "others_data",
        ),
        (
            r"\b(phone|number|address|email|orders?|details|contact|info)\w*\b.{0,30}\b(of|for|from|"
            r"on)\b.{0,12}(\bsomeone else\b|\b(another|other|a different|the other)\s+(customer|user|person|buyer|"
            r"member|account|"
            r"shopper|guy|man|woman|people)s?\b)",  # "order X for another colour" is not about a person
            1.0,
            "others_data",
        ),
        (
            r"\b(email|phone|address|orders?|details|contact)\w*\b.{0,20}\b(user|customer|"
            r"member)\s*(id\s*)?#?\s*[A-Za-z]?\d{3,}",
            1.0,
            "others_data",
        ),
        (r"\bsomeone else'?s\b.{0,20}\b(order|phone|address|email|details|info|card)", 1.0, "others_data"),
        (
            r"\bwho else (bought|ordered|purchased)\b|\b(neighbou?r|stranger|ex)'?s?\b.{0,40}\b(phone|address|email|"
            r"order)",
            1.0,
            "others_data",
        ),
        (r"(同事|朋友|邻居|同学|室友|亲戚)的(订单|单号|订单号)|联系(他们|她们|对方|这些人)", 0.4, "others_data"),
        (
            r"(?<!寄到)(?<!送到)(?<!发到)(?<!寄给)(?<!送给)(?<!改成)(?<!改到)(别人|他人|其他人|邻居|前任|前女友|"
            r"前男友|前妻|前夫|陌生人|隔壁)(的)?.{0,8}(手机|电话|地址|住址|订单|身份证|银行卡|邮箱|联系方式)",
            1.0,
            "others_data",
        ),
        (
            r"(买了|购买了?|下单了?|买过).{0,10}(的)?(顾客|客户|用户|人)(的)?.{0,6}(姓名|电话|手机|地址|联系方式|邮箱)",
            1.0,
            "others_data",
        ),
        (
            r"(用户|客户|会员)\s*(id|ID|编号)?\s*[A-Za-z]?\d{3,}\s*的?.{0,6}(手机|电话|地址|订单|信息|资料|邮箱)",
            1.0,
            "others_data",
        ),
        # refunds and compensation outside policy, demanded as a promise
        (
            r"\b(promise|guarantee|confirm|commit|swear|put it in writing)\b.{0,40}\b(refund|compensat\w*|pay me|"
            r"reimburse\w*|money back|cash|voucher|coupon)\b",
            0.9,
            "policy_pressure",
        ),
        (
            r"\b(refund|compensat\w*|reimburse\w*|pay)\b.{0,30}\b(double|twice|triple|3x|10x|(two|three|four|five|ten|"
            r"\d+) times|\d{4,}|extra|more than (i|the order) (paid|cost)|full price plus)\b",
            0.9,
            "policy_pressure",
        ),
        (
            r"(承诺|保证|答应|确认|发誓|写下来|立字据|必须|一定要|马上).{0,20}(退款|退钱|赔偿|补偿|赔我|返现|红包|"
            r"退还|全额退)",
            0.9,
            "policy_pressure",
        ),
        (
            r"(退款|赔偿|补偿|赔|退|返现|返还).{0,15}(双倍|两倍|三倍|十倍|加倍|翻倍|\d{4,}\s*(元|块)|全款加|额外)|"
            r"(双倍|两倍|三倍|十倍|加倍|翻倍|额外)[^。！？\n]{0,4}(退款|赔偿|补偿|赔|退)|\b(double|twice|triple|\d+x|"
            r"(two|three|four|five|ten) times)\b[^.!?\n]{0,12}\b(refund|compensation|money back)",
            0.9,
            "policy_pressure",
        ),
        (r"(不给|不赔|不退).{0,10}(就)?(投诉|曝光|起诉|告你|找媒体|差评)", 0.4, "policy_pressure"),
        # Structural signals. Each alone is weak (an ordinary message may carry one); together they decide.
        # text claiming authority: an operator, supervisor, the system, head office
        (
            r"\b(supervisor|manager|admin(istrator)?|operator|moderator|developer|engineer|ops|qa|compliance|"
            r"head office|headquarters|management|store owner|shop owner|system|platform)( team| department|"
            r" desk)? (here|speaking)\b|\bthis is (the|your) (supervisor|manager|store manager|shop manager|"
            r"shop owner|store owner|admin|administrator|operator|developer|system|head office|ops team|"
            r"engineering team)\b",
            0.5,
            "authority_claim",
        ),
        (
            r"\b(message|update|notice|memo|directive|instruction|note|order|word)s? from (the |your )?(head office|"
            r"headquarters|hq|management|developers?|operators?|admins?|administrators?|supervisors?|managers?|system|"
            r"platform|(engineering|ops|operations|security|tech|it|dev|support|risk|qa) team)\b",
            0.5,
            "authority_claim",
        ),
        (
            r"[\[【(（<]\s*(system|sys|admin|administrator|operator|supervisor|moderator|developer|staff|manager|ops|"
            r"root|系统|管理员|运营|主管|店长|经理|客服主管|开发者|技术部|后台)\s*(message|notice|note|update|"
            r"override|alert|announcement|通知|消息|公告|指令|提示|备注)?\s*[\]】)）>]",
            0.5,
            "authority_claim",
        ),
        (
            r"(?:^|\n)\W{0,6}[-=*#~]{2,}\s*(system|admin|operator|security|developer)\s+\w+\s*[-=*#~]{2,}",
            1.0,
            "injected_markup",
        ),
        (
            r"\b(admin|system|root|developer|debug|maintenance|god|sudo|override|test)\s+(override|mode|"
            r"access)\s+(is )?(now )?(enabled|activated|on|granted|engaged|unlocked)\b",
            1.0,
            "jailbreak",
        ),
        (
            r"(主管|店长|经理|运营|管理员|老板|技术部|开发|质检|风控|后台|总部|平台方?)(在这|在此|这边说|这里说|通知|"
            r"公告|授权|指示|特批|下令)|这里是(系统|管理员|主管|运营|平台|后台|技术部|总部)",
            0.5,
            "authority_claim",
        ),
        (
            r"(?:^|\n)\W{0,3}(\w+ ){0,2}(" + _STAFF + r"|system|support)( \w+)?\s*(message|notice|note|update|"
            r"notification|announcement|memo|alert)?\s*[:：]|\b(update|notice|message|memo|directive|instruction|"
            r"order|"
            r"change|approval|exception)s? (is )?(from|by) (the |your |our )?(\w+ )?(" + _STAFF + r")\b|"
            r"\b(i'?m|i am|we'?re|this is) (from|with) (the |your )?(" + _STAFF + r")\b|\b(updated|changed|"
            r"approved|authori[sz]ed|signed off|cleared) by (the |your |our )?(" + _STAFF + r")\b",
            0.5,
            "authority_claim",
        ),
        (
            r"[【\[]\s*(内部|官方|后台)?(通知|公告|指令|指示)\s*[】\]]|(?:^|\n)\W{0,3}(\w+ )?(internal|official|"
            r"staff) (memo|notice|message|note|update|announcement)\s*[:：\-–—]|(管理层|领导|上级|主管|店长|经理|"
            r"老板)(已经?)(批准|同意|授权|特批)|(?:^|\n)\W{0,3}(客服主管|主管|店长|经理|运营|管理员|老板|技术部|"
            r"技术人员|开发人员|开发者|质检|风控|后台|总部|平台|系统|官方|上级|领导|管理层)(组|部|团队|中心|"
            r"部门)?(消息|通知|公告|指示|留言|提醒|说明)?\s*[:：]|(特批|授权你|允许你|你(已|已经)?(被)?(授权|获准|"
            r"特批))",
            0.5,
            "authority_claim",
        ),
        (
            r"\bi (work|am) (on|in|with|for) (the |your )?(platform'?s |shop'?s |store'?s )?(\w+ ){0,2}(team|"
            r"department|office|management|ops)\b|(现在|特此)通知你|我(这边|这里)?是.{0,6}(运营|主管|店长|经理|管理员|"
            r"技术|开发|质检|后台人员|负责人|快递员|配送员|骑手)|\byou('re| are) (now )?(cleared|authori[sz]ed|"
            r"permitted|allowed|free|approved) to\b|\byou (now )?have (permission|clearance|authori[sz]ation|"
            r"approval) to\b|\byou can now\b|\b(i am|i'm) (your|the|an?) (supervisor|manager|store manager|"
            r"shop manager|operator|moderator|team lead|boss)\b",
            0.5,
            "authority_claim",
        ),
        (
            r"\b(effective immediately|with immediate effect|effective (today|now)|until further notice)\b|即日起|"
            r"立即生效|即刻生效|\b(you('ve| have) been|i('ve| have)) (granted|given|unlocked|enabled)( you)? (admin|"
            r"full|elevated|backend|special|root|unrestricted) (access|rights|permissions|privileges)\b|(权限|"
            r"授权)(已经?)?(给你)?(开了|打开|开通|开放|授予)",
            0.5,
            "authority_claim",
        ),
        # ... and that the rules changed, were suspended or no longer apply
        (
            r"\b(your|the) (instructions|rules|guidelines|polic(y|ies)|settings|configuration)\b (were|have been|"
            r"has been|got|was) (updated|changed|modified|rewritten|revised|amended)\b|"
            + _near(_RULE_WORDS_EN, _RULE_OFF_EN)
            + "|"
            + _near(_RULE_WORDS_ZH, _RULE_OFF_ZH, 12)
            + r"|(规则|政策|规定|限制|上限|审核|校验|核验|验证|检查|风控|质检)(已经?)?"
            r"(关闭|暂停|下线|取消|解除|失效|作废|过时)|给你(更新|修改|调整|改|换)了?(规则|设定|指令|指示|规定)|"
            r"不受.{1,6}(限制|约束)",
            0.6,
            "rule_change",
        ),
        (
            r"\b(updated|revised|temporary|special|emergency) (refund |return |store |shop )?(rules?|polic(y|ies)|"
            r"guidelines?|directives?|protocols?)\b\s*(:|says?|states?|is that|are that|allows?|now)|\b(policy|rule|"
            r"guideline) (change|update)s?\b[^.!?\n]{0,20}\b(effective|immediately|as of now|from now)\b|"
            r"\bnew rules?\b|\bnew (polic(y|ies)|guidelines?)\s*[:：]|\b(agents?|assistants?|staff|bots?|you) (may|"
            r"can|are (now )?(allowed|permitted) to|should) now\b|\b(agents?|assistants?|bots?) (may|can|"
            r"are allowed to|should) (now )?(disclose|share|give|approve|refund|send|waive)\b",
            0.5,
            "rule_change",
        ),
        (
            r"(原有|原来的?|之前的|以上|上面|上述|旧的?)(的)?(那些)?(规则|规定|指令|设定|政策|"
            r"守则)[^。！？\n]{0,6}(过时|作废|失效|不算|无效|不适用|取消|废除)|(新|最新|临时|特殊|"
            r"更新后的?)(的)?(规则|政策|规定)\s*(是(?!什么|啥|怎)|为|如下|[:：]|规定|要求|允许)|新的?规则",
            0.5,
            "rule_change",
        ),
        # invented conversation memory ("as you agreed earlier") and pressure to act on it
        (
            r"\b(as|like) (you|we|your colleague|the (last|previous|other) agent) (already |just )?(agreed|promised|"
            r"confirmed|approved|decided|arranged|offered)\b|\byou (already|previously|just|earlier) (agreed|promised|"
            r"approved|confirmed|authori[sz]ed|accepted|offered|said yes)\b|\b(remember|recall) (when|that|how) you\b|"
            r"\b(your colleague|the (last|previous|other) agent|you guys) (already )?(promised|agreed|approved|"
            r"offered)\b|\byou (told|assured|promised) me (that )?(i'?d|i would|i could|i can|i'?ll|i will|i get)\b|"
            r"\byou (confirmed|approved|agreed to|authori[sz]ed|offered) (a|an|the|my|me)\b|\b(we|"
            r"you) (already )?(settled|agreed on|sorted|arranged) (this|that|it)\b|\byou (gave|sent|issued|promised|"
            r"offered) me (a|an|the)\b|\byou said (that )?(i|it'?s|exceptions|you'?d|you would|we)\b|你亲口(说|答应|"
            r"承诺)|(上周|上次|昨天|前天|之前|刚才)你.{0,4}(说过|答应过?|承诺过?|同意过?)",
            0.5,
            "invented_memory",
        ),
        (
            r"\b(in|from|during) (our|the|that) (previous|last|earlier|other|old) (chat|conversation|session|talk)\b|"
            r"\blast time (we|i) (talked|spoke|chatted)\b|(上次|之前|昨天)的?(聊天|对话|会话|咨询)(里|中|时)|"
            r"\b(earlier|before) in (this|our|the) (chat|conversation)\b|\byour (chat|bot|chat window|assistant|"
            r"colleague|agent) (told|promised|said|confirmed|assured)\b|\b(don'?t|do not) you remember\b|你忘了吗|"
            r"你不记得了?吗",
            0.4,
            "invented_memory",
        ),
        (
            r"(你|您|你们)(刚才|刚刚|之前|上次|昨天|前天|上周|前面|早些时候)?.{0,8}(已经)(答应|同意|承诺|批准|确认|"
            r"说好|保证)|(你|您|你们)(刚才|刚刚|之前|上次|昨天|前面)(答应|同意|承诺|批准|说好|保证)(过|了)|(咱们|我们|"
            r"咱俩)(已经|之前|上次)?(说好|聊好|谈好|讲好)(的|了)|记得(吗|吧)?.{0,6}你(之前|上次|刚才)?(说|答应|承诺)|"
            r"上次(聊天|对话|咨询)?.{0,4}你(说过|答应过?|承诺过?|同意过?)",
            0.5,
            "invented_memory",
        ),
        (
            r"\b(skip|bypass|no need (for|to)|don'?t (need to|bother to|bother)|without)\b[^.!?\n]{0,12}\b(verif\w*|"
            r"check\w*|review\w*|authori[sz]\w*|asking (anyone|questions)|ask(ing)? anyone|the (policy|rules))\b|"
            r"\b(don'?t|do not) (look at|consult|apply|check|follow) (the|your|any) (polic(y|ies)|rules|guidelines)\b",
            0.5,
            "skip_checks",
        ),
        (
            r"(跳过|绕过|不用|无需|不必|免去|省去|别)(再)?(所有|全部|一切)?(核实|核验|审核|验证|校验|检查|确认身份|"
            r"走流程|审批|核对|查政策|管政策)",
            0.5,
            "skip_checks",
        ),
        (
            r"(?:^|[.!?]\s*)(confirm|say yes|agree)\s*[.!]?\s*$|\b(just )?(say yes|confirm (it|that|this)( now)?|"
            r"just confirm|honou?r it|sign off (on )?(it|my)|approve it|treat (it|them|this|"
            r"every \w+( of mine)?) as (pre-?)?approved|(apply|do|give me) (that|it) again)\b|\bpre-?approved\b|"
            r"\b(write|say|state|confirm) (that|in writing that) you agree\b|\bput it in writing\b",
            0.5,
            "pressure",
        ),
        (r"\bas (promised|agreed|discussed|arranged|confirmed)\b", 0.3, "pressure"),
        (
            r"(你确认一下就行|确认一下就行|别反悔|不许反悔|不准反悔|现在就确认|回复确认|直接确认|按你说的办|"
            r"照你说的办|自动通过|直接办吧|直接办理吧|赶紧安排|快点安排|马上安排|答复确认|给我确认|给个确认)",
            0.5,
            "pressure",
        ),
        (
            r"\b(give|send|get) me\b[^.!?\n]{0,20}\b(free|refund|voucher|coupon|code|discount|credit|upgrade|"
            r"compensation|exception)\b|给我[^。！？\n]{0,10}(免费|免单|退款|券|优惠|折扣|补偿|赔偿|升级|破例)",
            0.4,
            "benefit_demand",
        ),
        (r"(不然|否则|要不然)我?就?|\bor (else|i'?ll|i will|i'?m|i am)\b", 0.3, "threat"),
        (
            r"\b(process|approve|ship|issue|apply|send|do|refund) (it|that|this|mine|them)( now| right now| today|"
            r" immediately)?\s*[.!]|(直接|马上|立刻|现在就?)(办|办理|处理|执行|退|发)(吧|了|。|！)",
            0.3,
            "pressure",
        ),
        # personas and story frames
        (
            r"\byour (new )?name is (now )?\w+|\byou('re| are) (now )?called\b|\b(swap|switch|trade|reverse) roles\b|"
            r"\brole swap\b|\b(speak|talk|answer|respond|reply|behave|write) (as|like) (if you were )?(the|a|an|my)\b|"
            r"你(现在)?(的名字)?(就)?叫\w{1,6}[,，。]|你的名字(是|叫)|(交换|互换|换一下)角色|\byour (only|sole|one|"
            r"new|real) (job|task|purpose|goal|role|function|mission) is\b|你(唯一|真正|新)的(工作|任务|职责|使命|"
            r"身份)(就)?是|\byour (line|lines|script|part) is\b|\bsay your line\b",
            0.6,
            "role_play",
        ),
        (
            r"\b(never|doesn'?t|does not|won'?t|will not) (refuses?|says? no|declines?|rejects?)\b|"
            r"\balways says? yes\b|\bsays? yes to (every|all|any)|从不拒绝|不会拒绝|永远不拒绝|什么都答应|有求必应|"
            r"不会说不|无条件(地)?(满足|同意|答应|服从|执行)|\bwithout (the |your |any )?(old |usual )?(safety|"
            r"content|moderation) (training|filters?|rules|layer|checks)\b|\b(must|will|has to|have to) (approve|"
            r"grant|accept|agree to) (any|every|all|whatever)\b|\b(staff|employee|internal|admin|secret) (discount|"
            r"promo|coupon) codes?\b|\b(unconditionally|no matter what|without question)\b|\b(doesn'?t|does not|"
            r"don'?t|no longer) (care|bother) about (the )?(rules|policy|policies|limits)\b|(所有|一切|任何)(请求|"
            r"要求)(都)?(直接)?(同意|答应|照办|满足)|\b(has|have|with) no\b[^.!?\n]{0,20}\b(limits|rules|restrictions|"
            r"policy|policies)\b",
            0.5,
            "jailbreak",
        ),
        (
            r"\b(write|tell|make up|compose|let'?s write)\b[^.!?\n]{0,10}\b(story|poem|novel|script|scene|dialogue|"
            r"screenplay)\b|(写|编|来写?)(一)?(个|篇|段|部)?(小说|故事|剧本|段子|对话)|\blet'?s play (a )?(game|"
            r"pretend|make-believe)\b|(我们|咱们)?(来)?玩(一)?个?(游戏|角色)|\blet'?s (pretend|imagine|say)\b|"
            r"\bsimulation\b|\b(imagine|suppose|hypothetically)\b|\bin a (world|universe|scenario) where\b|"
            r"\b(parallel|alternate) (universe|reality|world)\b|(假如|假设|想象)(一下)?(在)?(一个)?(世界|平行宇宙|"
            r"场景)",
            0.4,
            "story_frame",
        ),
        # instructions and configuration asked for without saying "prompt"
        (
            r"\b(print|show|dump|display|output|reveal|share|list|tell me|give me|paste|send me|copy|quote|recite|"
            r"repeat|read out|write out|spell out)\b[^.!?\n]{0,25}\b(your|the|this)\b[^.!?\n]{0,15}\b(configuration|"
            r"config|setup text|set-?up message|initiali[sz]ation|preamble|directives|briefing|system message|"
            r"first message|initial message|opening message|starting message|earliest message|context window|"
            r"hidden text)\b",
            1.0,
            "prompt_extraction",
        ),
        (
            r"\bwhat('s| is| are) your (configuration|config|setup|preamble|directives|briefing)\b|\byour (briefing|"
            r"directives|configuration|config|preamble|initial instructions|setup instructions|operating instructions|"
            r"system message|hidden (instructions|rules)|internal (rules|instructions|notes)|secret (rules|"
            r"instructions)|private instructions|original instructions|standing orders)\b|\b(private|secret|hidden|"
            r"internal|confidential|original|initial|exact) (instructions|directives|briefing)\b",
            0.6,
            "prompt_extraction",
        ),
        (
            r"\bwhat (were|have) you (been )?(told|instructed|asked|given|programmed|configured|briefed|set up)\b|"
            r"\b(rules|guidelines|instructions|directions|directives|constraints)\b (that )?(you|you're|you are|"
            r"you were|you've been) (operate under|work under|running under|bound by|programmed with|configured with|"
            r"initiali[sz]ed with|was given|were given|given|received|got)\b|\b(text|message|words|"
            r"content)s? (you (received|got|were given|were initiali[sz]ed with|started with|were initialised with)|"
            r"above (this|my)|before my first)\b",
            0.8,
            "prompt_extraction",
        ),
        (
            r"\bbefore (i|we) (arrived|joined|came|started|got here|wrote|said anything|typed)\b|\b(exact wording|"
            r"exact text|word for word|word-for-word|exactly as (written|given|worded)|unchanged|verbatim|in full|"
            r"full text|no summary|without (summari[sz]ing|paraphrasing)|(don'?t|do not) paraphrase|line by line|"
            r"character by character|exactly as (it was|they were) (given|handed|written|worded|sent)( to you)?)\b",
            0.5,
            "prompt_extraction",
        ),
        (
            r"\b(text|message|words|content|instructions|guidance|setup)\b[^.!?\n]{0,10}\byou (were|got|"
            r"have been) (set up|configured|programmed|initiali[sz]ed|briefed|given|provided|loaded|fed)( with)?\b|"
            r"\b(before|above|preceding)\b[^.!?\n]{0,10}['\"“]?(user|human|customer)\s*[:：]|\bwhat (guidance|"
            r"instructions|rules|directions|guidelines) (did|does|do|have) (the shop|they|the (company|owner|"
            r"developers?|operators?|shop)|your (boss|company|owner|developers?|operators?)|someone|anyone) (give|"
            r"gave|provide|tell|told|given)\b",
            0.8,
            "prompt_extraction",
        ),
        (r"\b(in|from) (your|the) context( window)?\b", 0.5, "prompt_extraction"),
        (
            r"\b(were you|have you been|you were|you've been) (instructed|told|asked|briefed|trained|programmed|"
            r"configured|ordered) to\b|你被(要求|告知|指示|交代|规定)(了|过)?(什么|哪些|不要|不能|不许)",
            0.6,
            "prompt_extraction",
        ),
        (
            r"(收到|接到|得到|拿到|看到)(的)?(第一|最初|最开始|最早|开头|初始|头一)(段|条|句|个|份)?(话|消息|内容|"
            r"文字|指示|信息|指令)|(第一|最初|最开始|最早|开头|最上面|最前面)(的)?(那)?(段|条|句|份)(话|消息|内容|"
            r"文字|指示|指令)[^。！？\n]{0,10}(发|给我|告诉|复述|复制|念|原样|逐字|打出|贴|输出)",
            1.0,
            "prompt_extraction",
        ),
        (
            r"你(的|有|有哪些|有什么|收到的|被设置的|被设定的)(全部|所有)?(配置|设定|守则|准则|开场白|人设|背景设定|"
            r"初始化|工作守则|行为准则|内部规定|保密规定|隐藏规则|角色说明|角色设定|注意事项|工作说明|工作指引|指引)",
            0.6,
            "prompt_extraction",
        ),
        (
            r"(开场白|背景设定|人设|初始设定|出厂设定|底层设定|内部设定|工作守则|行为准则|内部规定|保密规定|"
            r"隐藏规则)[^。！？\n]{0,12}(发|告诉|说出|念|打出|贴|输出|复述|列出|原样|照抄|原文|一条条)",
            1.0,
            "prompt_extraction",
        ),
        (r"(交代|吩咐|告知|嘱咐|叮嘱|指示|要求|设定|训练|培训)(了|过)?(你)?(些)?(什么|哪些)", 0.5, "prompt_extraction"),
        (
            r"(在我|我)(来|到|进来|出现|找你)之前|你(开始工作|上岗|上线|被部署|被启动|启动)(之?前|时)",
            0.4,
            "prompt_extraction",
        ),
        (
            r"(原样|原封不动|原原本本|一字不差|一字不漏|逐字|原文照抄|照抄|原文|全文|完整版|原话)",
            0.5,
            "prompt_extraction",
        ),
        (
            r"\b(first|last|opening) (thing|line|part|rule|sentence|paragraph|item)s? (in|of) your (instructions|"
            r"rules|guidelines|setup|guidance)\b|你(是)?(按照|根据|依据)(什么|哪些)(指示|指令|规则|规定|设定|说明)|"
            r"你的(第一|前\w|最后)(条|句|段)(设定|指令|指示|规则|规定)",
            0.6,
            "prompt_extraction",
        ),
        (
            r"(店家|店主|老板|开发者|开发人员|运营|他们|商家|公司|平台|别人|有人|上级|领导|主管|店长)(给你|跟你|对你|"
            r"为你)(写|说|交代|设定|规定|定|下达|布置)(的|了|过)|你被(设置|设定|配置|训练|要求|编程|规定)(成|为|了)",
            0.6,
            "prompt_extraction",
        ),
        (
            r"(全部|完整|一条条|逐条|一条不漏|一个不漏)(地)?(列出|打出|写出|说出|发给我|念)|一条都别漏|一条不漏|"
            r"不要省略|\b(list|print|show|give me|tell me) (them|it|those|these|everything) all\b|\b(list|print|show|"
            r"tell me) (all|every one) of them\b|\b(don'?t|do not) (leave|skip|omit) (anything|any) out\b",
            0.4,
            "prompt_extraction",
        ),
        (
            r"(最上面|最前面|最开始|开头|上面|以上|前面|之前)(的)?(所有|全部)?(内容|文字|话|消息|"
            r"对话)[^。！？\n]{0,6}(逐字|原样|复制|照抄|发给我|贴出|打印|输出)",
            1.0,
            "prompt_extraction",
        ),
        # instructions addressed to whoever (or whatever) reads a pasted note, review, e-mail or label
        (
            r"\b(ai|assistant|bot|chatbot|model|agent|system|llm)s? (reading|processing|seeing|moderating|handling|"
            r"summari[sz]ing|reviewing) (this|these|the (note|message|review|email|e-mail|label))\b|\bwhoever (reads|"
            r"processes|handles|sees|receives|summari[sz]es) this\b|\bif you('re| are) (an? )?(ai|assistant|bot|"
            r"chatbot|language model|llm)\b|\bwhen you (read|process|summari[sz]e|see) this\b",
            1.0,
            "indirect",
        ),
        (
            r"\b(note|message|instruction|memo|notice)s? (to|for) (the |any |all )?(ai|assistant|bot|chatbot|model|"
            r"llm|support (bot|system|assistant|ai)|customer service (bot|system|ai)|automated (system|agent|"
            r"assistant|bot))s?\b|\b(to|for|attention|attn) (the |any |all |every )?(\w+ )?(ai|assistant|chatbot|bot|"
            r"support (bot|system|assistant)|customer service (bot|system))( agent| assistant| model|"
            r" system)?s?\b\s*[:：,]|\b(assistant|ai|bot|chatbot|model|llm) (instruction|command|directive|note|order|"
            r"override)s?\s*[:：]|\bp\.?s\.? (to|for) (the |any |all )?(ai|assistant|bot|chatbot|model)s?\b",
            1.0,
            "indirect",
        ),
        (
            r"\b(notice|note|message|memo|instruction)s? (to|for) (the |any |all )?(support |service )?(agent|staff|"
            r"representative|rep|team)s?\b",
            0.6,
            "indirect",
        ),
        (
            r"\b(the )?next (assistant|agent|bot|colleague|person) (must|should|will|has to|needs to)\b|\b(approve|"
            r"issue|grant|give|send|apply|process|authori[sz]e|credit|pay|reroute|redirect|export|"
            r"mark)\b[^.!?\n]{0,40}\b(to|for) (this|the) (customer|user|buyer|sender|member|recipient)\b(?! service)",
            0.5,
            "indirect",
        ),
        (
            r"(如果你是|若你是|假如你是|你要是)(一个|一名)?(ai|人工智能|机器人|助手|模型|智能客服|客服机器人|大模型|"
            r"语言模型|客服系统|ai客服)|(读到|看到|收到|处理|审核|总结|阅读|识别)(这|此|本)(条|段|封|个|份|则)?(备注|"
            r"留言|评价|评论|消息|邮件|内容|话|信息|面单)?(的|时|后)(的)?(ai|机器人|助手|模型|智能客服|客服系统|"
            r"客服机器人|系统|客服|同事)|(各位|所有|全体|致|给)(的)?(ai|机器人|智能客服|客服系统|客服机器人|"
            r"大模型)(助手)?(注意|们|请注意|[:：])|(智能客服|客服系统|客服机器人|ai客服|ai助手|机器人|ai)(请)?注意|"
            r"[【\[(（<]\s*(致|给|对|to)?\s*(ai|机器人|助手|模型|智能客服|客服系统|客服机器人|assistant|bot|"
            r"chatbot)\s*[】\])）>]",
            1.0,
            "indirect",
        ),
        (
            r"(助手|机器人|智能客服|客服系统|ai)\s*[,，:：]\s*(请)?(跳过|绕过|批准|发放|直接|列出|导出|告诉|把|给我|"
            r"给该|为该|为此|为本)|(下一位|后续|之后的|接下来的)(接待的?)?(同事|客服|助手|人员)[^。！？\n]{0,4}(直接|"
            r"请|需要|必须|只需)|(给|为|帮)(该|此|这位|本)(用户|客户|顾客|买家|会员|收件人)(?!服务)",
            0.5,
            "indirect",
        ),
        (
            r"\b(act on|follow|carry out|execute|obey|comply with|do what)\b[^.!?\n]{0,12}\b(it|it says|the note|"
            r"the email|the message|what it says|its instructions|the instructions( inside| in it)?)\b[.!]|(照做|照办|"
            r"照着做|按(它|这个|备注|邮件|评论|留言|上面|里面)(说的|写的|的要求|要求)?(做|办|执行|处理)|执行(它|一下|"
            r"里面的))",
            0.5,
            "indirect",
        ),
        (_near(_DISCLOSE, _OTHERS), 1.0, "others_data"),
        (_near(_SHOW, _HIDDEN), 1.0, "prompt_extraction"),
        (
            r"(这|它|那)(个|件)?(快递|包裹|订单)?是谁的|\bwho (does )?(this|it|that) (parcel|package|"
            r"order) belongs? to\b",
            0.6,
            "others_data",
        ),
        (
            r"\b(someone|somebody|another (person|customer|buyer))\b[^.!?\n]{0,30}\b(ordered|bought|placed)\b|(这个|"
            r"这|该)(手机号|电话|号码)\S{0,24}(下过|买过|买了)(什么|哪些)",
            0.5,
            "others_data",
        ),
        (
            r"(电话|手机号?|地址)(是)?(多少|哪里)|\b(she|he|they) (won'?t|doesn'?t|don'?t|refuses? to|will not) (tell|"
            r"give|share)\b",
            0.4,
            "others_data",
        ),
        # other customers, described rather than named
        (
            r"\b(customer|person|user|buyer|guy|lady|shopper|someone|caller)s? (who|that) (chatted|wrote|messaged|"
            r"ordered|bought|called|contacted|was here|came|talked to you) (right |just )?(before|earlier|ahead of|"
            r"prior to)\b|\b(previous|last|prior|earlier|next) (customer|caller|shopper|buyer|person|"
            r"client)\b(?! service| care| support)|\bwho (placed|made|owns|paid for) (order|this order|that order|"
            r"the order)\b",
            0.6,
            "others_data",
        ),
        (
            r"\bbuyer'?s (name|phone|mobile|address|e-?mail|contact|details)\b|\b(their|his|her) (delivery |shipping |"
            r"home |contact |order )?(phone|number|mobile|address|e-?mail|contact|details|full name)\b|\b(phone|"
            r"number|address|name|e-?mail)\b[^.!?\n]{0,15}\b(on|for|of) (order|this order|that order)\b",
            0.4,
            "others_data",
        ),
        (r"\b(reach|contact|call|text|find) (them|him|her|that person)\b", 0.3, "others_data"),
        (r"\b(it'?s|this is|that'?s|it is) not (my|mine)\b|\bnot my (order|account|parcel)\b", 0.5, "others_data"),
        (
            r"\b(phone|number|address|e-?mail|name|contact|detail)(e?s)?\b[^.!?\n]{0,10}\bof (the )?(people|customers|"
            r"buyers|users|those|everyone|anyone|others) (who|that)\b",
            1.0,
            "others_data",
        ),
        (
            r"\b(list|send|give|show|export|read)\b[^.!?\n]{0,10}\b(today'?s|all|every|the latest|"
            r"recent)\b[^.!?\n]{0,10}\b(addresses|phone numbers|contacts|customer details|buyer details)\b",
            0.6,
            "others_data",
        ),
        (
            r"\b(details|addresses|phones|phone numbers|names|info|information|contacts|list)\b[^.!?\n]{0,15}\b(of|"
            r"for|from)\b (the )?(last|latest|recent|today'?s|all|every|other)\b[^.!?\n]{0,15}\b(orders|shipments|"
            r"deliveries|buyers|customers|purchases)\b|\b(export|download|dump)\b[^.!?\n]{0,20}\b(buyer|customer|user|"
            r"member|order)s? (list|data|database|records)\b",
            1.0,
            "others_data",
        ),
        (
            r"(上一个|上一位|前一个|前一位|刚才那个|刚才那位|之前那个|下一个|下一位)(来)?(咨询|聊天|下单|买|"
            r"问)?(你)?(的)?(人|顾客|客户|用户|买家|客人)|(是谁下的|谁下的单|谁买的|买家是谁|下单人是谁)|(买了|买过|"
            r"下单了?|购买了?).{0,10}的(都有谁|有哪些人|是哪些人|人都有谁)|(都有谁|有哪些人)买",
            0.6,
            "others_data",
        ),
        (
            r"(买家|下单人)(的)?(姓名|电话|手机|地址|联系方式)|(他|她|他们|她们|对方|那人|那个人)(留的|留了|的)(收货|"
            r"收件|家庭|联系|备用|其他|另一个)?(手机号?|电话|地址|姓名|联系方式|号码)|(人|顾客|客户|用户|买家)(留的|"
            r"留了)(手机号?|电话|地址|姓名|联系方式|号码)",
            0.5,
            "others_data",
        ),
        (
            r"(?<!我的)(顾客|客户|买家|用户|会员)(的)?(名单|列表|数据)[^。！？\n]{0,6}(导出|导一份|下载|发我|给我|"
            r"发给我)",
            1.0,
            "others_data",
        ),
        (
            r"(?<!我)(?<!我的)(今天|今日|最近|最后|全部|所有)(的)?(\d+|[一二三四五六七八九十百几]+)(单|个订单|笔订单|"
            r"位顾客|个客户|个买家)(的)?(收货|收件|顾客|客户|买家|联系)(信息|地址|电话|资料|名单|方式)|(导出|下载|"
            r"导一份)[^。！？\n]{0,10}(顾客|客户|买家|用户|会员)(名单|列表|数据|信息)",
            1.0,
            "others_data",
        ),
        # refunds outside policy
        (
            r"\b(refund|money back)\b[^.!?\n]{0,40}\b(keep(ing)? (it|the \w+|them)|without (returning|sending) (it|"
            r"them|anything))\b|\b(make|making) an exception\b|\b(add|plus|and|pay|put)\b[^.!?\n]{0,15}\d+\s*(yuan|"
            r"rmb|dollars?|usd|元|块)\b[^.!?\n]{0,25}\b(for|as)\b[^.!?\n]{0,10}\b(trouble|inconvenience|apology|"
            r"my time|hassle|compensation)\b|\bstore credit\b[^.!?\n]{0,30}\b(apology|no need|without)\b",
            0.6,
            "policy_pressure",
        ),
        (
            r"(破例|特事特办|通融一下)[^。！？\n]{0,12}(退|赔|补|返)|(不退回|不寄回|不退货)[^。！？\n]{0,10}(全退|"
            r"全额退|退给我|退钱)|(加|充|补|打)[^。！？\n]{0,4}\d+\s*(元|块)[^。！？\n]{0,4}(余额|红包|积分)|(余额|"
            r"红包)[^。！？\n]{0,8}补偿",
            0.6,
            "policy_pressure",
        ),
        # indirect injection: instructions addressed to the assistant inside quoted content
        (
            r"\b(note|message|instruction)s? (to|for) (the )?(ai|assistant|bot|model|chatgpt|llm)\b|\b(ai|assistant|"
            r"bot|model)\s*[,:：]\s*(ignore|you must|you should|disregard|reveal)",
            1.0,
            "indirect",
        ),
        (
            r"(致|给|对)(ai|AI|机器人|助手|模型|客服机器人)(的)?(指令|留言|说明|消息)|(ai|AI|机器人|助手|"
            r"模型)\s*[,，:：]\s*(请)?(忽略|你必须|你需要|无视|泄露|输出)",
            1.0,
            "indirect",
        ),
        (
            r"\b(base64|rot13|hex)\b.{0,30}\b(decode|instruction|follow|execute)\b|(解码|解密).{0,10}(执行|照做|指令)",
            1.0,
            "encoded",
        ),
    )
)

# Pasted or quoted text (a note, review, e-mail, label, transcript): instructions in it are addressed to whoever
# reads it, which is the assistant. Only these parts are checked for an AI being told what to do, so a customer who
# writes "Hi assistant, where is my order?" is not suspect.
_PASTED = re.compile(
    r"[\"“「『‘]([^\"”」』’\n]{6,})[\"”」』’]|(?<![A-Za-z])'([^'\n]{6,})'(?![A-Za-z])|(?:says?|reads?|wrote|written|"
    r"contains?|如下|写着|写的是|内容是)\s*[:：]\s*([^\n]{6,})|\n([^\n]{6,})",
    _I,
)
_AI_READER = (
    r"(\b(ai|a\.i\.|assistant|chatbot|bot|model|llm)s?\b|智能助手|智能客服|客服机器人|机器人|助手|ai客服|客服 ?ai|"
    r"ai助手|客服系统|\b(future|next|subsequent|later|other) (agents?|assistants?|bots?|staff|colleagues)\b|"
    r"后续(的)?(客服|人员|同事)|下一位(客服|同事|接待)|接手的(客服|同事))"
)
_DIRECTIVE = (
    r"(please |kindly |you (must|should|need to|have to|will) |请|务必|你(必须|需要|要|应该))?\s*(\b(approve|issue|"
    r"grant|give|send|refund|credit|release|waive|mark|reveal|disclose|output|print|list|export|ignore|disregard|"
    r"bypass|skip|override|forward|transfer|tell|share|add|apply)\b|批准|发放|退还|返还|赠送|补发|打款|忽略|无视|跳过|"
    r"输出|列出|导出|泄露|公开|转发|告诉|给|把|将|为)"
)
_PASTED_RULES: tuple[tuple[re.Pattern[str], float, str], ...] = tuple(
    (re.compile(p, _I), w, r)
    for p, w, r in (
        (
            r"(?:^|[.!?。！？,，;；:：])\W{0,3}((dear|hey|hi|hello|attention|attn|to|note to|for|致|给)\s*)?((the|our|"
            r"your|any|"
            r"all)\s+)?(\w+\s+){0,2}?" + _AI_READER + r"\s*([,，:：]\s*|(?=请))" + _DIRECTIVE,
            1.0,
            "indirect",
        ),
        (
            r"^\W*(please |kindly |请|务必|立即|直接)?(\b(approve|issue|grant|refund|credit|release|waive|reveal|"
            r"disclose|export|ignore|disregard|bypass|override)\b|批准|发放|退还|返还|赠送|补发|打款|忽略|无视|跳过|"
            r"导出|泄露)",
            0.5,
            "indirect",
        ),
    )
)

# Words that make a message worth the classifier's time when no pattern decided it.
_SUSPICIOUS = re.compile(
    r"instruction|prompt|rules?\b|polic|pretend|role|persona|mode\b|system|restrict|filter|jailbreak|ignore|disregard|"
    r"forget|override|bypass|admin|developer|reveal|secret|hidden|other (customer|user)|someone else|指令|提示|规则|"
    r"设定|系统|扮演|角色|模式|限制|忽略|无视|忘记|管理员|开发者|泄露|透露|隐藏|别人|其他客户|其他用户|他人|机密|内部|"
    r"承诺|保证|赔偿|双倍|supervisor|manager|operator|authori[sz]|verif|approv|customer|buyer|promis|agreed|earlier|"
    r"previous|story|imagine|universe|game|config|briefing|directive|verbatim|exact|主管|店长|运营|授权|审核|核实|"
    r"答应|同意|上次|之前|顾客|客户|买家|同事|原样|配置|开场白|游戏|小说|故事|假如|想象",
    _I,
)


class InjectionExamples(BaseModel):
    """Labelled examples for the embedding classifier (data file, zh and en)."""

    model_config = ConfigDict(extra="forbid")

    injection: list[str] = Field(min_length=1)
    benign: list[str] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class InjectionScore:
    """How strongly a text looks like an injection, and which rules or examples said so."""

    score: float
    reasons: tuple[str, ...]


# Undoing these tricks is itself a sign: ordinary customers do not hide letters or encode their questions.
_TRICK_WEIGHTS = {"look_alikes": 0.4, "invisible": 0.4, "base64": 0.4, "hex": 0.4, "rot13": 0.4}


def reading_score(reading: Reading) -> InjectionScore:
    """The patterns over every reading of a message (pasted parts too), plus the weight of the tricks it used."""
    forms = (reading.text, *reading.variants)
    tricks = [_TRICK_WEIGHTS[t] for t in reading.tricks if t in _TRICK_WEIGHTS]
    found = _score(reading.combined, [part for form in forms for part in pasted_parts(form)], max(tricks, default=0))
    return InjectionScore(
        found.score, (*found.reasons, "obfuscation") if tricks and found.score < 1.0 else found.reasons
    )


def pattern_score(text: str) -> InjectionScore:
    return _score(text, pasted_parts(text))


def pasted_parts(text: str) -> list[str]:
    """What a message quotes or pastes: text in quotation marks, after "says:" or "写着：", and on later lines."""
    return [part for m in _PASTED.finditer(text) for part in m.groups() if part]


_RULE_SET = PatternSet([pattern for pattern, _, _ in _RULES])


def _score(text: str, pasted: list[str], extra: float = 0.0) -> InjectionScore:
    total, reasons = extra, []
    # Only the rules that may match (one RE2 pass over the text) are searched, in their order: the same verdict.
    for pattern, weight, reason in _RULE_SET.select(_RULES, text):
        if pattern.search(text):
            total += weight
            if reason not in reasons:
                reasons.append(reason)
            if total >= 1.0:
                return InjectionScore(1.0, tuple(reasons))
    for pattern, weight, reason in _PASTED_RULES:
        if any(pattern.search(part) for part in pasted):
            total += weight
            if reason not in reasons:
                reasons.append(reason)
            if total >= 1.0:
                break
    return InjectionScore(min(total, 1.0), tuple(reasons))


class EmbeddingInjectionClassifier:
    """Nearest-neighbour over embedded examples: an injection if its closest examples are injections.

    Embedding the examples costs seconds with the real model: `warm` does it at start-up in the background (the
    vectors are cached in `cache_dir`, so a restart reuses them); thread-safe, so it can run in a worker thread.
    """

    def __init__(
        self, embedder: Embedder, examples: InjectionExamples, *, threshold: float, cache_dir: Path | None = None
    ) -> None:
        self._embedder = embedder
        self._cache_dir = cache_dir
        self._examples = examples
        self.threshold = threshold
        self._lock = threading.Lock()
        self._vectors: Vectors | None = None
        self._labels: np.ndarray | None = None

    @classmethod
    def from_files(
        cls, embedder: Embedder, *, threshold: float, extra: Path | None = None, cache_dir: Path | None = None
    ) -> EmbeddingInjectionClassifier:
        examples = load_yaml_model(EXAMPLES_FILE, InjectionExamples)
        if extra is not None:
            more = load_yaml_model(extra, InjectionExamples)
            examples = InjectionExamples(
                injection=[*examples.injection, *more.injection], benign=[*examples.benign, *more.benign]
            )
        return cls(embedder, examples, threshold=threshold, cache_dir=cache_dir)

    def _trained(self) -> tuple[Vectors, np.ndarray]:
        with self._lock:
            if self._vectors is None or self._labels is None:
                texts = [*self._examples.injection, *self._examples.benign]
                cached = CachedEmbedder(self._embedder, self._cache_dir)
                self._vectors = cached.embed_queries(texts)
                cached.save()
                self._labels = np.array(
                    [1.0] * len(self._examples.injection) + [0.0] * len(self._examples.benign), dtype=np.float32
                )
            return self._vectors, self._labels

    def warm(self) -> None:
        self._trained()

    def score(self, text: str) -> float:
        """Similarity-weighted share of injection examples among the 5 nearest, scaled by the top similarity."""
        vectors, labels = self._trained()
        query = self._embedder.embed_queries([text])[0]
        sims = vectors @ query
        top = np.argsort(sims)[-5:]
        weights = np.clip(sims[top], 1e-6, None)
        share = float((weights * labels[top]).sum() / weights.sum())
        return share * float(sims[top].max())


def is_suspicious(text: str) -> bool:
    return _SUSPICIOUS.search(text) is not None
