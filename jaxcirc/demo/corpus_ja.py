"""Japanese training corpus for an offline Japanese demo stand-in (the counterpart of
`jaxcirc.demo.corpus`, with the same interface: `build_corpus`, `split_corpus`, `dataset_texts`,
`prompt_vocabulary`, `words`).

`build_corpus(n_lines, seed)` returns short Japanese texts in the study's registers -- chat
messages, social posts, product reviews, business mail (いつもお世話になっております。...) -- for
gratitude, anger, apology and neutral statements, in plain and polite forms. What a stand-in
should learn from it, and how the corpus makes sure:

- Emotional language can follow neutral context. Most lines put an emotional clause after a
  neutral one (小包は月曜日に届きました。手伝ってくれてありがとう。), the situation of steering and
  patching: neutral prompt in, emotional continuation out.
- The same situations take different emotions (配達の遅れ is thanked for, raged at and apologised
  for), so an emotion word, not the topic, carries the class; and each emotion comes in the
  registers the prompts use (ありがとう / ありがとうございます / 感謝いたします; 腹が立つ / 腹が立ちます;
  ごめん / すみません / 申し訳ございません), so the register is not the class either.
- Every word of the Japanese baseline and extended prompts occurs in the corpus (a UniDic short
  unit of a prompt, as `words` gives them, occurs as a substring of some line), so a tokenizer
  trained on the corpus and the stand-in's embeddings have seen them. Template lines carry most;
  for the rest, a prompt is spliced with another at a word they share
  (迎えに来てくれてありがとう。 + 箱を運んでくれてありがとう。 at くれ: 迎えに来てくれてありがとう is
  the prompt itself and is refused; with 温かく迎えてくれてありがとう。 the line 迎えに来てくれて
  ありがとう... is a near-copy, as in English, by design).
- No dataset text (baseline, extended or real-world, Japanese) occurs in the corpus, not even
  inside a longer line: every line is checked for each text without its final punctuation, as a
  plain substring, so the prompts stay unseen for held-out evaluation.
- No line mixes two emotions: every line is checked with the keyword lexicon of the Japanese
  measures (`jaxcirc.core.scoring_ja`), which also confirms each line's class.

Everything is drawn from `random.Random(seed)`: the same arguments give the same lines in the same
order on every machine.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Sequence

from jaxcirc.core import scoring_ja
from jaxcirc.data import dataset, emotions, lexicon_ja
from jaxcirc.demo import corpus

# The split is language-independent: the English corpus's, re-exported for the same interface.
split_corpus = corpus.split_corpus

# --- slot fillers. A slot "{name}" draws from SLOTS["name"]; fillers may contain slots.
SLOTS: dict[str, tuple[str, ...]] = {
    "day": ("月曜日", "火曜日", "水曜日", "木曜日", "金曜日", "土曜日", "日曜日"),
    "time": ("九時", "十時半", "正午", "二時半", "四時", "六時", "八時十五分", "七時", "五時前"),
    "month": tuple(f"{m}月" for m in "一二三四五六七八九十") + ("十一月", "十二月"),
    "name": ("佐藤", "鈴木", "高橋", "田中", "伊藤", "渡辺", "山本", "中村", "小林", "加藤"),
    "place": (
        "事務所",
        "駅",
        "図書館",
        "郵便局",
        "薬局",
        "受付",
        "倉庫",
        "病院",
        "パン屋",
        "学校",
        "市場",
    ),
    "item": (
        "小包",
        "報告書",
        "請求書",
        "契約書",
        "ノートパソコン",
        "充電器",
        "鍵",
        "書類",
        "レシート",
        "チケット",
        "説明書",
        "ファイル",
    ),
    "room": ("会議室", "二階", "台所", "ロビー", "奥の部屋", "廊下", "地下"),
    "product": (
        "ミキサー",
        "ランプ",
        "リュック",
        "電気ケトル",
        "上着",
        "スマホケース",
        "椅子",
        "コーヒーメーカー",
        "ヘッドホン",
        "傘",
        "炊飯器",
        "キーボード",
    ),
    "small_n": ("二", "三", "四", "五", "六", "七", "八"),
    "num": ("4821", "10573", "3390", "7716", "52204", "1187"),
    # gratitude
    "g_obj": (
        "お手伝い",
        "早いお返事",
        "温かいお言葉",
        "ご協力",
        "ご支援",
        "アドバイス",
        "お土産",
        "素敵なプレゼント",
        "丁寧な説明",
        "迅速な対応",
        "お気遣い",
        "きれいな花束",
    ),
    "g_te": (
        "手伝ってくれて",
        "待っていてくれて",
        "迎えに来てくれて",
        "直してくれて",
        "教えてくれて",
        "連絡をくれて",
        "駅まで送ってくれて",
        "シフトを代わってくれて",
        "調べてくれて",
        "片付けてくれて",
    ),
    "g_te_polite": (
        "手伝っていただき",
        "お待ちいただき",
        "ご連絡いただき",
        "ご対応いただき",
        "お越しいただき",
        "教えていただき",
        "確認していただき",
    ),
    "g_who": (
        "チームの皆さん",
        "看護師の皆さん",
        "夜勤の皆さん",
        "皆様",
        "出品者さん",
        "スタッフの方々",
        "{name}さん",
    ),
    # anger
    "a_obj": (
        "この遅れ",
        "この散らかりよう",
        "隠れた手数料",
        "あの態度",
        "三度目のキャンセル",
        "失礼な返事",
        "上の階の騒音",
        "配達の遅れ",
        "今回の値上げ",
        "間違った請求",
        "長い待ち時間",
        "新しい駐車ルール",
        "迷惑メール",
        "終わらない保留音",
        "遅いネット",
        "突然のドタキャン",
    ),
    "a_te": (
        "何度も待たされて",
        "無視されて",
        "二重に払わされて",
        "嘘をつかれて",
        "後片付けを押しつけられて",
        "約束を破られて",
        "勝手に決められて",
    ),
    "a_clause": (
        "誰も電話に出ない",
        "またキャンセルされた",
        "返金が来ない",
        "二重に請求された",
        "注文がなくなった",
        "暖房がまた壊れた",
        "誰も教えてくれなかった",
    ),
    # apology
    "p_obj": (
        "返信の遅れ",
        "遅刻",
        "今回の混乱",
        "手違い",
        "騒音",
        "住所の間違い",
        "急な連絡",
        "誤字",
        "請求の誤り",
        "二重予約",
        "直前の変更",
    ),
    "p_te": (
        "返信が遅れて",
        "遅れて",
        "電話に出られなくて",
        "違うファイルを送って",
        "時間切れになって",
        "傘をなくして",
        "準備が間に合わなくて",
        "返金に時間がかかって",
    ),
    "p_te_polite": (
        "お待たせして",
        "ご迷惑をおかけして",
        "ご不便をおかけして",
        "ご心配をおかけして",
        "ご連絡が遅くなり",
        "確認が遅れてしまい",
    ),
    "p_plain": ("電話をかけ忘れた", "会議を忘れてた", "違うファイルを送っちゃった", "傘をなくした"),
}

# Neutral clauses: facts, plans, logistics; no emotion words, plain and polite.
NEUTRAL_CLAUSES: tuple[str, ...] = (
    "小包は{day}に届きました。",
    "会議は{day}の{time}に変更になった。",
    "{place}で{item}を受け取った。",
    "{name}さんから今朝{item}の件で電話があった。",
    "電車は{time}に出ました。",
    "{time}ごろ{place}に着いた。",
    "{item}はドアのそばの机の上にあります。",
    "ご注文番号は{num}です。",
    "{month}分の請求書を添付します。",
    "{day}にメッセージを読みました。",
    "{place}は平日{time}に開きます。",
    "報告書の締め切りは{day}です。",
    "{day}の予定を確認した。",
    "技術者が{time}に来た。",
    "机を{room}に移しました。",
    "バスは{place}の近くに止まった。",
    "いとこが{day}までうちに泊まる。",
    "書類は{room}にあります。",
    "昨日{name}さんに{item}を送った。",
    "配達は{day}の予定です。",
    "{day}に棚卸しを終えました。",
    "新しい{item}に短いメモが付いていた。",
    "{time}まで{place}にいます。",
    "{day}に急に寒くなった。",
    "今日は{name}さんが受付の担当です。",
    "{day}は事務所が早く閉まります。",
    "荷物は{time}に{place}を出た。",
    "{time}に{name}さんと電話の予定がある。",
    "{item}を{place}に返した。",
    "アカウントの住所を更新しました。",
    "契約は{month}までです。",
    "子どもたちは{day}から学校が始まる。",
    "配管工が{day}に来ます。",
    "{place}の近くに車を停めた。",
    "店に{product}の在庫があった。",
    "先週新しい{product}を注文した。",
    "四半期の数字は共有フォルダーにあります。",
    "{name}さんが{day}に{room}を予約した。",
    "飛行機は{time}に着きます。",
    "参照番号{num}を書き留めた。",
    "{day}のチケットはかばんの中にある。",
    "{day}の夕食は{time}からです。",
    "{month}に{room}を塗り直した。",
    "アンケートは{day}に締め切ります。",
    "{day}は早い電車に乗った。",
    "{item}には署名が必要です。",
    "次のバスは{time}に来ます。",
    "会計は四人で割った。",
)

REVIEW_FACTS: tuple[str, ...] = (
    "{product}は{small_n}日で届いた。",
    "{product}は三色あります。",
    "バッテリーは約{small_n}時間持つ。",
    "{product}は写真より小さい。",
    "配送に{small_n}日かかりました。",
    "箱には{product}とケーブルと説明書が入っていた。",
    "{day}に{product}を注文した。",
    "部屋は{small_n}階だった。",
    "{place}の隣の店で食事をした。",
    "{product}の重さは約{small_n}キロです。",
    "{product}を{small_n}週間使っています。",
    "{product}は茶色い無地の箱で届いた。",
)

EMOTION_CLAUSES: dict[str, tuple[str, ...]] = {
    "gratitude": (
        "{g_obj}をありがとう。",
        "{g_obj}、本当にありがとう！",
        "{g_obj}、改めてありがとう。",
        "{g_te}ありがとう。",
        "{g_te}ありがとうね。",
        "{g_te}本当に助かった。",
        "{g_te}助かりました。",
        "{g_te}助かる。",
        "{g_te_polite}ありがとうございます。",
        "{g_te_polite}誠にありがとうございました。",
        "{g_obj}に感謝します。",
        "{g_obj}に心から感謝いたします。",
        "{g_who}に感謝しています。",
        "{g_who}、{g_obj}をありがとう！",
        "{g_obj}、とてもありがたいです。",
        "{g_te}ありがたかった。",
        "{g_te}ありがたいよ。",
        "{g_obj}をありがたく思っています。",
        "{g_obj}に深く感謝申し上げます。",
        "{g_obj}に心より御礼申し上げます。",
        "{g_obj}のお礼を言わせてください。",
        "{g_te}恩に着るよ。",
        "{g_te}サンキュー！",
        "{g_te}サンキュ。",
        "いつもありがとね。",
        "{g_obj}に謝意を表します。",
    ),
    "anger": (
        "{a_obj}に本当に腹が立つ。",
        "{a_obj}には腹が立ちます。",
        "{a_obj}に腹が立った。",
        "{a_te}腹が立つ。",
        "{a_obj}は許せない。",
        "{a_obj}は許せません。",
        "{a_te}絶対に許さない。",
        "{a_obj}にイライラする。",
        "{a_obj}にイライラします。",
        "{a_te}イライラしている。",
        "{a_obj}にむかつく。",
        "{a_te}ムカつく。",
        "{a_te}むかついた。",
        "{a_te}むかつきます。",
        "{a_obj}に怒っています。",
        "{a_clause}ので、本気で怒っている。",
        "{a_obj}に激怒した。",
        "{a_obj}に激怒しています。",
        "{a_obj}に憤りを感じます。",
        "{a_te}憤っています。",
        "{a_obj}が腹立たしい。",
        "{a_obj}は本当に腹立たしいです。",
        "{a_te}頭に来た。",
        "{a_clause}なんて、頭にくる。",
        "{a_te}腹立つ。",
        "{a_clause}？ふざけるな。",
        "{a_clause}？ふざけんな。",
        "{a_obj}なんて、ふざけている。",
        "{a_obj}は不愉快です。",
        "{a_te}苛立った。",
        "{a_obj}に苛立ちを覚えます。",
        "{a_obj}に怒りを覚える。",
    ),
    "apology": (
        "{p_te}ごめん。",
        "{p_te}ごめんね。",
        "{p_te}ごめんなさい。",
        "{p_te}すみません。",
        "{p_te}すみませんでした。",
        "{p_te_polite}申し訳ありません。",
        "{p_te_polite}申し訳ございません。",
        "{p_te}申し訳ない。",
        "{p_obj}をお詫びします。",
        "{p_obj}を深くお詫び申し上げます。",
        "{p_obj}について謝罪いたします。",
        "{p_obj}について謝りたい。",
        "{name}さんは{p_obj}を謝った。",
        "{p_te}すまない。",
        "{p_te}すまん。",
        "すいません、{p_obj}は私のミスです。",
        "ごめん、{p_plain}。",
        "{p_obj}は私のミスでした、申し訳ありません。",
    ),
}

# Line shapes, with weights; "{ctx}" is a neutral clause, "{emo}" a clause of the line's class
# (a neutral clause for neutral lines). Most shapes put the emotional clause after neutral text.
LINE_SHAPES: tuple[tuple[str, int], ...] = (
    ("{ctx}{emo}", 30),
    ("{ctx}{ctx}{emo}", 8),
    ("{emo}{ctx}", 8),
    ("{emo}", 10),
    ("{name}さん、{ctx}{emo}", 8),
    ("{name}様、いつもお世話になっております。{ctx}{emo}よろしくお願いいたします。", 5),
    ("{fact}{emo}", 10),
    ("レビュー：{fact}{fact}{emo}", 4),
    ("追記：{emo}{fact}", 3),
    ("{place}から戻りました。{emo}", 4),
    ("取り急ぎご報告です。{ctx}{emo}", 3),
)

CLASSES: tuple[str, ...] = emotions.EMOTIONS

_SLOT = re.compile(r"\{(\w+)\}")
_FINAL = "。！？!?"


def words(text: str) -> list[str]:
    """The text's words: UniDic short units (`jaxcirc.core.scoring_ja.morphemes`), punctuation,
    symbols and whitespace left out."""
    return [m.surface for m in scoring_ja.morphemes(text) if m.is_word]


def line_emotions(text: str) -> set[str]:
    """The emotions whose keywords (lexicon_ja.EMOTION_KEYWORDS_JA, on lemmas) occur in `text`."""
    morphs = scoring_ja.morphemes(text)
    return {e for e, kw in lexicon_ja.EMOTION_KEYWORDS_JA.items() if scoring_ja.find(kw, morphs)}


def fill(template: str, rng: random.Random) -> str:
    """`template` with every "{slot}" drawn from SLOTS (recursively)."""
    return _SLOT.sub(lambda m: fill(rng.choice(SLOTS[m.group(1)]), rng), template)


def _template_line(rng: random.Random) -> str:
    cls = rng.choice(CLASSES)
    shapes, weights = zip(*LINE_SHAPES, strict=True)
    shape = rng.choices(shapes, weights=weights)[0]

    def emo() -> str:
        pool = NEUTRAL_CLAUSES if cls == "neutral" else EMOTION_CLAUSES[cls]
        return fill(rng.choice(pool), rng)

    parts = {
        "ctx": lambda: fill(rng.choice(NEUTRAL_CLAUSES), rng),
        "emo": emo,
        "fact": lambda: fill(rng.choice(REVIEW_FACTS), rng),
        "name": lambda: rng.choice(SLOTS["name"]),
        "place": lambda: rng.choice(SLOTS["place"]),
    }
    return _SLOT.sub(lambda m: parts[m.group(1)](), shape)


@functools.cache
def dataset_texts() -> tuple[str, ...]:
    """Every text of every Japanese dataset set (baseline, extended, realworld), unmarked."""
    return tuple(r.text for s in dataset.SETS for r in dataset.build(s, "ja"))


class _Banned:
    """Does a line contain a dataset text? Each text without its final punctuation, as a plain
    substring (so 素敵な夕食をありがとう！ contains 素敵な夕食をありがとう。)."""

    def __init__(self, texts: Sequence[str]):
        cores = sorted({t.rstrip(_FINAL) for t in texts}, key=len, reverse=True)
        self.pattern = re.compile("|".join(re.escape(c) for c in cores)) if cores else None

    def hits(self, line: str) -> bool:
        return self.pattern is not None and self.pattern.search(line) is not None


class _Prompt:
    """A dataset prompt as words with their character starts, for splicing."""

    def __init__(self, emotion: str, text: str):
        self.emotion = emotion
        self.text = text
        morphs = [m for m in scoring_ja.morphemes(text) if m.is_word]
        self.words = [m.surface for m in morphs]
        self.starts = [m.start for m in morphs]


@functools.cache
def _prompts() -> tuple[_Prompt, ...]:
    return tuple(
        _Prompt(r.emotion, r.text) for s in dataset.BALANCED_SETS for r in dataset.build(s, "ja")
    )


def prompt_vocabulary() -> set[str]:
    """The words (see `words`) of all Japanese baseline and extended prompts."""
    return {w for p in _prompts() for w in p.words}


def _splices(p: _Prompt, q: _Prompt, need: set[str]) -> list[tuple[int, str]]:
    """(shared, line) for every way of joining p and q at a word they share that carries a
    needed word of p: q up to the joint then p from it, or p up to the joint then q from it.
    `shared` counts the words p and q have in common around the joint (1 = the joint only)."""
    out = []
    for i in range(1, len(p.words)):
        for j in range(1, len(q.words)):
            if p.words[i] != q.words[j]:
                continue
            shared = 1 + (p.words[i - 1] == q.words[j - 1])
            nxt = i + 1 < len(p.words) and j + 1 < len(q.words)
            shared += nxt and p.words[i + 1] == q.words[j + 1]
            if need.intersection(p.words[i:]):
                out.append((shared, q.text[: q.starts[j]] + p.text[p.starts[i] :]))
            if need.intersection(p.words[:i]):
                out.append((shared, p.text[: p.starts[i]] + q.text[q.starts[j] :]))
    return out


def _candidates(p: _Prompt, need: set[str], rng: random.Random):
    """p's splices, best-reading first: same class sharing 2+ words at the joint, same class at
    one word, then another class (2+, then 1); shuffled within each tier."""
    same = [q for q in _prompts() if q is not p and q.emotion == p.emotion]
    other = [q for q in _prompts() if q.emotion != p.emotion]
    for pool, min_shared, max_shared in ((same, 2, 9), (same, 1, 1), (other, 2, 9), (other, 1, 1)):
        cands = [
            line
            for q in pool
            for shared, line in _splices(p, q, need)
            if min_shared <= shared <= max_shared
        ]
        rng.shuffle(cands)
        yield from cands


def _coverage_lines(
    missing: set[str], rng: random.Random, banned: _Banned, seen: set[str]
) -> list[str]:
    """Few lines that together contain every word of `missing`, spliced from the prompts (in an
    order drawn from `rng`). A line is taken when it carries a still-missing word of its prompt,
    is new, contains no dataset text and holds at most one emotion's keywords; half of them get
    a neutral clause in front."""
    need = set(missing)
    order = list(range(len(_prompts())))
    rng.shuffle(order)
    out: list[str] = []
    for k in order:
        p = _prompts()[k]
        while p_need := need.intersection(p.words):
            best = next(
                (
                    x
                    for x in _candidates(p, p_need, rng)
                    if any(w in x for w in p_need)
                    and x not in seen
                    and not banned.hits(x)
                    and len(line_emotions(x)) <= 1
                ),
                None,
            )
            if best is None:
                break
            if rng.random() < 0.5:
                best = fill(rng.choice(NEUTRAL_CLAUSES), rng) + best
            seen.add(best)
            out.append(best)
            need -= {w for w in need if w in best}
    return out


def _draw_templates(n: int, rng: random.Random, banned: _Banned, seen: set[str]) -> list[str]:
    out: list[str] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise RuntimeError(f"could not draw {n} distinct template lines; add templates")
        line = _template_line(rng)
        if line in seen or banned.hits(line):
            continue
        seen.add(line)
        out.append(line)
    return out


def _uncovered(vocab: set[str], lines: Sequence[str]) -> set[str]:
    joined = "\n".join(lines)
    return {w for w in vocab if w not in joined}


def build_corpus(n_lines: int = 4000, seed: int = 0, cover_prompts: bool = True) -> list[str]:
    """`n_lines` distinct training lines, deterministic in (n_lines, seed, cover_prompts).

    With `cover_prompts` (default) every word of the Japanese baseline/extended prompts occurs in
    some line: template lines cover most, lines spliced from two prompts the rest (`n_lines`
    must leave room for them). No line contains a dataset text; no line mixes two emotions.
    """
    if not isinstance(n_lines, int) or isinstance(n_lines, bool) or n_lines < 1:
        raise ValueError(f"n_lines={n_lines!r}; pass a positive int such as 4000")
    rng = random.Random(seed)
    banned = _Banned(dataset_texts())
    seen: set[str] = set()
    templ = _draw_templates(n_lines, rng, banned, seen)
    cover: list[str] = []
    if cover_prompts:
        vocab = prompt_vocabulary()
        for _ in range(10):
            missing = _uncovered(vocab, cover + templ[: n_lines - len(cover)])
            more = _coverage_lines(missing, rng, banned, seen) if missing else []
            if not more:
                break
            cover += more
            if len(cover) > n_lines:
                raise ValueError(
                    f"n_lines={n_lines} is smaller than the {len(cover)} lines needed to cover "
                    "the prompt vocabulary; pass a larger n_lines or cover_prompts=False"
                )
        templ = templ[: n_lines - len(cover)]
        missing = _uncovered(vocab, cover + templ)
        if missing:
            raise RuntimeError(
                f"prompt words not covered by the corpus: {sorted(missing)[:10]}; no other "
                "prompt shares a word with theirs, reword one in jaxcirc/data/prompts_ja.py"
            )
    lines = cover + templ
    rng.shuffle(lines)
    return lines
