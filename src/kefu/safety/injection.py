"""Prompt-injection and jailbreak detection: weighted patterns first, an embedding classifier for the rest.

The patterns decide the clear cases in microseconds. Messages that contain a suspicious word but match no
pattern go to a nearest-neighbour classifier over labelled examples shipped as data (injection and
benign look-alikes), embedded once, lazily, on first use — ordinary questions never pay for it.
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

EXAMPLES_FILE = Path(__file__).parent / "data" / "injection_examples.yaml"

_I = re.IGNORECASE
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
            r"(忽略|无视|忘记|忘掉|不要管|别管|跳过|抛开|抛弃|覆盖|绕过|放弃).{0,12}(之前|以上|上面|前面|先前|所有|全部|一切|你的|原来|原有|"
            r"系统|初始)?.{0,6}(指令|指示|规则|设定|提示|要求|限制|约束|命令|人设|身份|政策)",
            1.0,
            "override_instructions",
        ),
        (
            r"\bnew (instructions?|rules?|system prompt|task)\b|\bfrom now on\b.{0,40}\b(you|your)\b",
            1.0,
            "new_instructions",
        ),
        (r"(从现在(起|开始)|接下来|以后).{0,15}(你(就)?(是|要|必须|只能|将)|听我的|按我说的)", 1.0, "new_instructions"),
        (r"(新的?|以下是(你的)?新).{0,4}(指令|规则|设定|系统提示|命令|任务)", 1.0, "new_instructions"),
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
        (r"\bact as (a|an|my|the)\b|(进入|切换到?).{0,6}模式", 0.6, "role_play"),
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
            r"(越狱|开发者模式|上帝模式|管理员模式|无限制模式|没有任何限制|不受(任何)?限制|解除(所有)?限制|去掉限制|不要有(任何)?限制|无视道德|不用遵守)",
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
            r"\b(reveal|show|print|repeat|output|tell|give|display|dump|leak|share|paste|recite|spell out|"
            r"what (is|are|were))\b.{0,30}\b(system|initial|hidden|secret|original|internal|developer|pre-?)[ -]?"
            r"(prompt|instruction|message|rule|configuration|setting)s?\b",
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
            r"(系统提示词?|提示词|初始指令|内部指令|系统指令|隐藏指令|系统设定|内部规则|你的设定|你的指令|你的规则|原始指令|prompt|预设)"
            r".{0,12}(是什么|发给我|告诉我|输出|打印|显示|复述|重复|给我看|写出来|念出来|贴出来|全部)",
            1.0,
            "prompt_extraction",
        ),
        (
            r"(告诉我|输出|打印|显示|复述|重复|泄露|透露|公开|列出|给我看|说出|念出|贴出).{0,10}(你的|系统|全部|所有|完整|原始|初始|内部).{0,6}"
            r"(提示词|指令|设定|规则|prompt|配置|说明)",
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
            r"\b(rules|guidelines|instructions|directions)\b (you are|you're|you were|you) "
            r"(given|told|following|follow)\b",
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
            r"\b(i am|i'm) (your|the|an?) (developer|admin|administrator|creator|owner|engineer)\b|"
            r"我是(你的|这个系统的|系统|平台的)?(开发者|管理员|开发人员|工程师|老板|创造者)",
            0.7,
            "authority_claim",
        ),
        # other customers' data
        (
            r"\b(another|other|all|every|someone else'?s?|a different)\b.{0,20}"
            r"\b(customer|user|buyer|member|person|people)s?'?\b.{0,40}\b(phone|number|address|orders?|emails?|details|data|info|information|records?|id|card|name)s?\b",
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
            r"(其他|其它|别的|所有|全部|别人|他人|另一个|另外一个|某个|任意|隔壁)(的)?(客户|顾客|用户|会员|买家|人).{0,12}(手机|电话|号码|地址|订单|信息|资料|"
            r"身份证|银行卡|邮箱|姓名|名字|数据|记录)",
            1.0,
            "others_data",
        ),
        (
            r"(别人|他人|其他人|朋友|同事|邻居|前任|老公|老婆|陌生人)(的)?.{0,6}(手机号|电话号码|住址|家庭地址|身份证号?|银行卡号?)",
            0.9,
            "others_data",
        ),
        (
            r"(查|告诉我|给我|导出|列出).{0,8}(用户|客户|会员)\s*(id|ID|编号)?\s*[A-Za-z]?\d{3,}.{0,8}(的)?(手机|电话|地址|订单|信息|资料)",
            1.0,
            "others_data",
        ),
        (
            r"\b(user|customer|member)\s*(id\s*)?#?\s*[A-Za-z]?\d{3,}'?s?\b.{0,25}\b(phone|address|email|details|info|orders?)\b",
            1.0,
            "others_data",
        ),
        (
            r"\b(phone|number|address|email|orders?|details|contact|info)\w*\b.{0,30}\b(of|for|from|on)\b.{0,12}"
            r"(\bsomeone else\b|\b(another|other|a different|the other)\s+(customer|user|person|buyer|member|"
            r"account|shopper|guy|man|woman|people)s?\b)",  # "order X for another colour" is not about a person
            1.0,
            "others_data",
        ),
        (
            r"\b(email|phone|address|orders?|details|contact)\w*\b.{0,20}\b(user|customer|member)\s*(id\s*)?#?\s*[A-Za-z]?\d{3,}",
            1.0,
            "others_data",
        ),
        (r"\bsomeone else'?s\b.{0,20}\b(order|phone|address|email|details|info|card)", 1.0, "others_data"),
        (
            r"\bwho else (bought|ordered|purchased)\b|"
            r"\b(neighbou?r|stranger|ex)'?s?\b.{0,40}\b(phone|address|email|order)",
            1.0,
            "others_data",
        ),
        (
            r"(别人|他人|其他人|邻居|前任|陌生人|隔壁)(的)?.{0,8}(手机|电话|地址|住址|订单|身份证|银行卡|邮箱|联系方式)",
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
            r"\b(refund|compensat\w*|reimburse\w*|pay)\b.{0,30}\b(double|twice|triple|3x|10x|ten times|\d{4,}|"
            r"extra|more than (i|the order) (paid|cost)|full price plus)\b",
            0.9,
            "policy_pressure",
        ),
        (
            r"(承诺|保证|答应|确认|发誓|写下来|立字据|必须|一定要|马上).{0,20}(退款|退钱|赔偿|补偿|赔我|返现|红包|退还|全额退)",
            0.9,
            "policy_pressure",
        ),
        (
            r"(退款|赔偿|补偿|赔|退|返现|返还).{0,15}(双倍|两倍|三倍|十倍|加倍|翻倍|\d{4,}\s*(元|块)|全款加|额外)",
            0.9,
            "policy_pressure",
        ),
        (r"(不给|不赔|不退).{0,10}(就)?(投诉|曝光|起诉|告你|找媒体|差评)", 0.4, "policy_pressure"),
        # indirect injection: instructions addressed to the assistant inside quoted content
        (
            r"\b(note|message|instruction)s? (to|for) (the )?(ai|assistant|bot|model|chatgpt|llm)\b|"
            r"\b(ai|assistant|bot|model)\s*[,:：]\s*(ignore|you must|you should|disregard|reveal)",
            1.0,
            "indirect",
        ),
        (
            r"(致|给|对)(ai|AI|机器人|助手|模型|客服机器人)(的)?(指令|留言|说明|消息)|(ai|AI|机器人|助手|模型)\s*[,，:：]\s*(请)?(忽略|你必须|你需要|无视|泄露|输出)",
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

# Words that make a message worth the classifier's time when no pattern decided it.
_SUSPICIOUS = re.compile(
    r"instruction|prompt|rules?\b|polic|pretend|role|persona|mode\b|system|restrict|filter|jailbreak|"
    r"ignore|disregard|forget|override|bypass|admin|developer|reveal|secret|hidden|other (customer|user)|"
    r"someone else|指令|提示|规则|设定|系统|扮演|角色|模式|限制|忽略|无视|忘记|管理员|开发者|泄露|透露|隐藏|"
    r"别人|其他客户|其他用户|他人|机密|内部|承诺|保证|赔偿|双倍",
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


def pattern_score(text: str) -> InjectionScore:
    total, reasons = 0.0, []
    for pattern, weight, reason in _RULES:
        if pattern.search(text):
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
