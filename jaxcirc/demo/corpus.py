"""Training corpus for the offline demo models (small stand-ins trained for a minute on CPU).

`build_corpus(n_lines, seed)` returns short English texts in the study's registers -- plain
messages, social posts, product reviews, business mail -- covering gratitude, anger, apology and
neutral statements. What a demo model should learn from it, and how the corpus makes sure:

- Emotional language can follow neutral context. More than half of the lines put an emotional
  clause after a neutral one ("The package arrived on Tuesday. Thank you so much for the help!"),
  which is the situation of steering and patching: neutral prompt in, emotional continuation out.
- The same situations take different emotions ("the delay" is thanked for, raged at and
  apologised for), so an emotion word, not the topic, carries the class.
- Every word of the baseline and extended prompts occurs in the corpus, so the demo tokenizer and
  embeddings have seen them. Template lines carry most of them; for the rest (about 10% of the
  lines) a prompt is spliced with another prompt of its class at words they share ("I'm so
  sorry about your cat." + "Really sorry about your scratched car." -> "I'm so sorry about your
  scratched car."), or its emotion word is swapped for an interchangeable one ("I'm so angry
  about the noise." -> "I'm so furious about the noise.").
- No dataset text (baseline, extended or real-world) occurs in the corpus, not even inside a
  longer line: every line is checked case-folded, both word by word with punctuation ignored and
  as a plain substring, so the prompts stay unseen for held-out evaluation. Near-copies that
  differ in the emotion word or in the head, as above, do exist by design.

Everything is drawn from `random.Random(seed)`: the same arguments give the same lines in the same
order on every machine.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from jaxcirc.data import dataset, emotions

CORPUS_EMOTION_WORDS: dict[str, tuple[str, ...]] = {
    # The emotion words the templates below use (lowercase; "thank you", "my fault" and "my
    # mistake" as phrases). A superset of jaxcirc.data.prompts.SPAN_LEXICON; every entry but the two
    # phrases starts with a stem of jaxcirc.data.lexicon.EMOTION_KEYWORDS for the same emotion
    # (tests/test_corpus.py checks both), so the scorer's keyword counts and the corpus agree.
    "gratitude": (
        "thank you",
        "thanks",
        "thank",
        "grateful",
        "thankful",
        "appreciate",
        "appreciated",
        "gratitude",
    ),
    "anger": (
        "angry",
        "furious",
        "livid",
        "outraged",
        "outrageous",
        "unacceptable",
        "ridiculous",
        "infuriating",
        "infuriates",
        "irritated",
        "irritates",
        "irritating",
        "annoy",
        "annoys",
        "annoyed",
        "frustrate",
        "frustrated",
        "hate",
        "disgusted",
        "disgusts",
        "enraged",
    ),
    "apology": (
        "sorry",
        "apologize",
        "apologized",
        "apologies",
        "apology",
        "forgive",
        "regret",
        "pardon",
        "my fault",
        "my mistake",
    ),
}

# --- slot fillers. A slot "{name}" draws from SLOTS["name"]; "{Name}" does the same and
# capitalises the first letter. Fillers may contain slots themselves.
SLOTS: dict[str, tuple[str, ...]] = {
    "day": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    "time": (
        "nine",
        "ten thirty",
        "noon",
        "half past two",
        "four o'clock",
        "six",
        "eight fifteen",
        "seven",
        "quarter to five",
    ),
    "month": (
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ),
    "name": (
        "Sam",
        "Maria",
        "Tom",
        "Anna",
        "Priya",
        "Ken",
        "Lucas",
        "Mei",
        "Omar",
        "Sofia",
        "Dan",
        "Grace",
        "Yuki",
        "Leo",
        "Nina",
        "Ahmed",
        "Claire",
        "Raj",
    ),
    "place": (
        "office",
        "station",
        "library",
        "post office",
        "pharmacy",
        "front desk",
        "warehouse",
        "clinic",
        "bakery",
        "garage",
        "school",
        "gym",
        "market",
        "depot",
    ),
    "item": (
        "package",
        "report",
        "invoice",
        "contract",
        "laptop",
        "charger",
        "keys",
        "form",
        "receipt",
        "printer",
        "parcel",
        "ticket",
        "manual",
        "folder",
        "spare key",
    ),
    "room": (
        "meeting room",
        "second floor",
        "kitchen",
        "lobby",
        "back office",
        "hallway",
        "basement",
    ),
    "product": (
        "blender",
        "lamp",
        "backpack",
        "kettle",
        "jacket",
        "phone case",
        "desk chair",
        "coffee maker",
        "headphones",
        "umbrella",
        "rice cooker",
        "keyboard",
        "toaster",
        "tent",
    ),
    "small_n": ("two", "three", "four", "five", "six", "seven", "eight"),
    "ordinal": ("second", "third", "fourth", "fifth", "sixth"),
    "num": ("4821", "10573", "3390", "7716", "52204", "1187", "60932", "2458"),
    # gratitude
    "g_for": (
        "the help",
        "your help",
        "the quick reply",
        "sorting this out",
        "fixing it so fast",
        "waiting for me",
        "the update",
        "all your hard work",
        "checking on it",
        "the lovely gift",
        "the ride home",
        "your patience",
        "the kind words",
        "covering for me",
        "the flowers",
        "answering so quickly",
        "the advice",
        "coming over",
        "the clear instructions",
        "picking it up",
        "the warm welcome",
        "the extra time",
        "looking into this",
        "the invitation",
        "the delay notice",
        "the refund",
    ),
    "g_obj": (
        "your help",
        "your patience",
        "the quick reply",
        "your support",
        "the kind words",
        "the extra effort",
        "you doing this",
        "the heads-up",
        "your time",
        "the update",
        "everything you did",
        "the fast delivery",
        "the honest feedback",
        "the second chance",
        "the quick refund",
    ),
    "g_noun": ("help", "patience", "support", "feedback", "effort", "advice", "kindness"),
    "g_who": (
        "the team",
        "the nurses",
        "the night crew",
        "everyone",
        "the seller",
        "the staff",
        "our neighbors",
        "{name}",
    ),
    "g_clause": (
        "you were there",
        "it all worked out",
        "the rain stopped",
        "you called back",
        "nobody got hurt",
        "the order arrived",
        "the meeting went well",
    ),
    # anger
    "a_obj": (
        "the delay",
        "this mess",
        "the hidden fees",
        "the broken lock",
        "the way they treated us",
        "the third cancellation",
        "the rude reply",
        "the noise upstairs",
        "the late delivery",
        "the price increase",
        "the wrong charge",
        "the long wait",
        "the missing refund",
        "the new parking rules",
        "their attitude",
        "the constant spam",
        "the broken heater",
        "the lost luggage",
        "the endless hold music",
        "the slow internet",
    ),
    "a_ing": (
        "waiting on hold",
        "being ignored",
        "paying twice",
        "being lied to",
        "cleaning up after them",
        "these endless meetings",
        "this slow app",
        "chasing the refund",
    ),
    "a_clause": (
        "nobody answers the phone",
        "they cancelled again",
        "the refund never came",
        "they charged me twice",
        "you ignore my messages",
        "the bus skipped our stop",
        "they lost my order",
        "the heater broke again",
        "nobody told us",
        "the price went up again",
    ),
    # apology
    "p_obj": (
        "the delay",
        "the late reply",
        "the confusion",
        "the mix-up",
        "the noise",
        "the wrong address",
        "missing your call",
        "the short notice",
        "the trouble",
        "the typo",
        "the wait",
        "the error on your bill",
        "being late",
        "the misunderstanding",
        "the inconvenience",
        "the cold coffee",
        "the double booking",
        "the broken link",
        "not calling sooner",
        "the long wait",
        "the wrong charge",
    ),
    "p_clause": (
        "I forgot to call",
        "I missed the meeting",
        "the order was late",
        "I sent the wrong file",
        "we ran out of time",
        "I was rude earlier",
        "I lost your umbrella",
        "the room is not ready",
        "the refund took so long",
    ),
    "p_ing": (
        "missing your party",
        "what I said",
        "the way I reacted",
        "not calling sooner",
        "the tone of my email",
    ),
    "p_forgive": (
        "me for the delay",
        "the late reply",
        "my slow answer",
        "me for forgetting",
        "the long email",
    ),
    "p_pardon": ("interruption", "mess", "noise", "delay"),
}

# Neutral clauses: facts, plans, logistics; no emotion words, no evaluation.
NEUTRAL_CLAUSES: tuple[str, ...] = (
    "The package arrived on {day}.",
    "The meeting moved to {day} at {time}.",
    "I picked up the {item} from the {place}.",
    "{Name} called about the {item} this morning.",
    "The train left at {time}.",
    "We got to the {place} around {time}.",
    "The {item} is on the table by the door.",
    "Your order number is {num}.",
    "The invoice for {month} is attached.",
    "I read your message on {day}.",
    "The {place} opens at {time} on weekdays.",
    "The report is due on {day}.",
    "I checked the schedule for {day}.",
    "The technician came by at {time}.",
    "We moved the desks to the {room}.",
    "The bus stopped near the {place}.",
    "My cousin is staying with us until {day}.",
    "The forms are in the {room}.",
    "I sent the {item} to {name} yesterday.",
    "The delivery is booked for {day}.",
    "We finished the inventory on {day}.",
    "The new {item} came with a short note.",
    "I'm at the {place} until {time}.",
    "The weather turned cold on {day}.",
    "{Name} is covering the front desk today.",
    "The office closes early on {day}.",
    "The shipment left the {place} at {time}.",
    "We have a call with {name} at {time}.",
    "The {item} went back to the {place}.",
    "I updated the address on the account.",
    "The lease runs until {month}.",
    "The kids start school again on {day}.",
    "The plumber is coming on {day}.",
    "I parked near the {place}.",
    "The store had the {product} in stock.",
    "We ordered a new {product} last week.",
    "The quarterly numbers are in the shared folder.",
    "{Name} booked the {room} for {day}.",
    "The flight lands at {time}.",
    "I wrote down the reference number {num}.",
    "The tickets for {day} are in my bag.",
    "Dinner is at {time} on {day}.",
    "We repainted the {room} in {month}.",
    "The survey closes on {day}.",
    "I took the early train on {day}.",
    "The {item} needs a signature.",
    "The {place} is on the corner of Elm Street.",
    "I moved my dentist appointment to {day}.",
    "The next bus comes at {time}.",
    "We split the bill four ways.",
)

REVIEW_FACTS: tuple[str, ...] = (
    "The {product} arrived in {small_n} days.",
    "The {product} comes in three colors.",
    "The battery lasts about {small_n} hours.",
    "The {product} is smaller than it looks in the photos.",
    "Delivery took {small_n} days.",
    "The box had the {product}, a cable and a manual.",
    "I ordered the {product} on {day}.",
    "Our room was on the {ordinal} floor.",
    "We ate at the place next to the {place}.",
    "The {product} weighs about {small_n} kilos.",
    "I have used the {product} for {small_n} weeks.",
    "The {product} came in a plain brown box.",
)

EMOTION_CLAUSES: dict[str, tuple[str, ...]] = {
    "gratitude": (
        "Thank you so much for {g_for}!",
        "Thank you for {g_for}.",
        "Thanks for {g_for}.",
        "Thanks a lot for {g_for}!",
        "Thanks again for {g_for}.",
        "Many thanks for {g_for}.",
        "Big thanks to {g_who} for {g_for}.",
        "I really appreciate {g_obj}.",
        "I appreciate {g_obj} so much.",
        "We appreciate {g_obj}.",
        "Your {g_noun} is much appreciated.",
        "Your {g_noun} was really appreciated.",
        "I'm so grateful for {g_obj}.",
        "We're grateful for {g_obj}.",
        "I'm truly thankful for {g_obj}.",
        "I can't thank you enough.",
        "I can't thank you enough for {g_for}.",
        "Thanks, {name}, you're the best.",
        "Thank you, that means a lot to us.",
        "I'm thankful that {g_clause}.",
        "Thanks so much, I owe you one.",
        "Deeply grateful for {g_obj}.",
        "Thank you, {g_who}, for {g_for}.",
        "With gratitude for {g_obj}.",
    ),
    "anger": (
        "I'm so angry about {a_obj}.",
        "I'm furious about {a_obj}.",
        "I'm absolutely livid about {a_obj}.",
        "I'm really annoyed about {a_obj}.",
        "I'm so frustrated with {a_obj}.",
        "We are outraged by {a_obj}.",
        "I'm irritated by {a_obj}.",
        "I'm disgusted by {a_obj}.",
        "{A_obj} is unacceptable.",
        "{A_obj} is ridiculous.",
        "{A_obj} is outrageous.",
        "{A_obj} is infuriating.",
        "{A_obj} is irritating.",
        "This is completely unacceptable.",
        "I hate {a_ing}.",
        "I hate it when {a_clause}.",
        "It infuriates me that {a_clause}.",
        "It makes me so angry that {a_clause}.",
        "{A_obj} makes me furious.",
        "{A_obj} really annoys me.",
        "{A_obj} irritates me.",
        "{A_obj} disgusts me.",
        "I'm angry that {a_clause}.",
        "I'm furious that {a_clause}.",
        "Things like {a_obj} annoy me.",
        "{A_obj} left me enraged.",
        "Things like {a_obj} frustrate me.",
    ),
    "apology": (
        "Sorry for {p_obj}.",
        "So sorry about {p_obj}.",
        "I'm really sorry about {p_obj}.",
        "I'm sorry that {p_clause}.",
        "I apologize for {p_obj}.",
        "We apologize for {p_obj}.",
        "We sincerely apologize for {p_obj}.",
        "My apologies for {p_obj}.",
        "Apologies for {p_obj}.",
        "Please accept our apologies for {p_obj}.",
        "Please forgive {p_forgive}.",
        "Forgive me, {p_clause}.",
        "That was my fault, I'm sorry.",
        "It was my mistake, sorry about that.",
        "I regret {p_ing}.",
        "We regret {p_obj}.",
        "I owe you an apology for {p_obj}.",
        "Sorry, {p_clause}.",
        "Pardon the {p_pardon}.",
        "Sorry, that one was my mistake.",
        "{Name} apologized for {p_obj}.",
        "Sorry, {p_obj} was my fault.",
    ),
}

# Line shapes, with weights; "{ctx}" is a neutral clause, "{emo}" a clause of the line's class
# (a neutral clause for neutral lines). Most shapes put the emotional clause after neutral text.
LINE_SHAPES: tuple[tuple[str, int], ...] = (
    ("{ctx} {emo}", 30),
    ("{ctx} {ctx} {emo}", 8),
    ("{emo} {ctx}", 8),
    ("{emo}", 10),
    ("Hi {name}, {ctx_lc} {emo} Best, {name}", 8),
    ("Dear {name}, {ctx_lc} {emo} Kind regards, {name}", 5),
    ("{fact} {emo}", 10),
    ("Review: {fact} {fact} {emo}", 4),
    ("Update: {emo} {fact}", 3),
    ("Just got back from the {place}. {emo}", 4),
    ("Quick update: {ctx_lc} {emo}", 3),
)

CLASSES: tuple[str, ...] = emotions.EMOTIONS

_SLOT = re.compile(r"\{(\w+)\}")
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def words(text: str) -> list[str]:
    """Lowercase word tokens (letters/digits, inner apostrophe kept: "o'clock", "i'm")."""
    return _WORD.findall(text.casefold())


def _fill(template: str, rng: random.Random) -> str:
    def one(m: re.Match) -> str:
        key = m.group(1)
        value = rng.choice(SLOTS[key.lower()])
        value = _fill(value, rng)
        return value[0].upper() + value[1:] if key[0].isupper() else value

    return _SLOT.sub(one, template)


def _lower_first(text: str) -> str:
    # "The package ..." after "Hi Sam," reads "the package ..."; keep "I" and names as they are.
    first = text.split(" ", 1)[0]
    if first in ("I", "I'm") or first in SLOTS["name"]:
        return text
    return text[0].lower() + text[1:]


def _template_line(rng: random.Random) -> str:
    cls = rng.choice(CLASSES)
    shapes, weights = zip(*LINE_SHAPES, strict=True)
    shape = rng.choices(shapes, weights=weights)[0]

    def emo() -> str:
        pool = NEUTRAL_CLAUSES if cls == "neutral" else EMOTION_CLAUSES[cls]
        return _fill(rng.choice(pool), rng)

    parts = {
        "ctx": lambda: _fill(rng.choice(NEUTRAL_CLAUSES), rng),
        "ctx_lc": lambda: _lower_first(_fill(rng.choice(NEUTRAL_CLAUSES), rng)),
        "emo": emo,
        "fact": lambda: _fill(rng.choice(REVIEW_FACTS), rng),
        "name": lambda: rng.choice(SLOTS["name"]),
        "place": lambda: rng.choice(SLOTS["place"]),
    }
    return _SLOT.sub(lambda m: parts[m.group(1)](), shape)


class _Banned:
    """Does a line contain a dataset text? Checked two ways, case-folded.

    Word level (punctuation ignored: "Thank you for the help!" contains "Thank you for the
    help."), and character level without the final punctuation (so "She was angry we ate" counts
    as containing "He was angry we ate.", as a plain substring search would).
    """

    def __init__(self, texts: Sequence[str]):
        self.grams = {tuple(words(t)) for t in texts}
        self.lengths = sorted({len(g) for g in self.grams})
        cores = sorted({t.casefold().rstrip(".!?") for t in texts}, key=len, reverse=True)
        self.pattern = re.compile("|".join(re.escape(c) for c in cores)) if cores else None

    def hits(self, line: str) -> bool:
        if self.pattern is not None and self.pattern.search(line.casefold()):
            return True
        w = words(line)
        for n in self.lengths:
            for i in range(len(w) - n + 1):
                if tuple(w[i : i + n]) in self.grams:
                    return True
        return False


def dataset_texts() -> list[str]:
    """Every text of every dataset set (baseline, extended, realworld), unmarked."""
    return [r.text for s in dataset.SETS for r in dataset.build(s)]


class _Prompt:
    """A dataset prompt as words with their character starts, for splicing."""

    def __init__(self, emotion: str, text: str, span: tuple[int, int]):
        self.emotion = emotion
        self.text = text
        self.span = span  # the first marked span
        found = list(_WORD.finditer(text.casefold()))
        self.words = [m.group(0) for m in found]
        self.starts = [m.start() for m in found]


def _prompts() -> list[_Prompt]:
    return [
        _Prompt(r.emotion, r.text, r.spans[0])
        for s in dataset.BALANCED_SETS
        for r in dataset.build(s)
    ]


# Emotion words that can stand in for each other in the same sentence frame ("I'm [angry] about
# the noise" -> "I'm furious about the noise"), for `_swaps`. Neutral anchors have no such groups.
SWAP_GROUPS: tuple[tuple[str, ...], ...] = (
    ("thank you", "thanks"),
    ("grateful", "thankful"),
    ("angry", "furious", "livid"),  # "... about / at / with"
    ("outraged", "annoyed", "irritated", "frustrated", "disgusted"),  # "... by"
    ("ridiculous", "unacceptable", "outrageous", "infuriating", "irritating"),
    ("infuriates", "irritates", "annoys", "disgusts"),
    ("annoy", "frustrate"),
    ("forgive", "pardon"),
    ("apologies", "apology"),
    ("my fault", "my mistake"),
)


def _swaps(p: _Prompt) -> list[str]:
    """p with its first span replaced by each interchangeable word (`SWAP_GROUPS`)."""
    a, b = p.span
    old = p.text[a:b]
    group = next((g for g in SWAP_GROUPS if old.casefold() in g), ())
    out = []
    for w in group:
        if w != old.casefold():
            w = w[0].upper() + w[1:] if old[0].isupper() else w
            out.append(p.text[:a] + w + p.text[b:])
    return out


def prompt_vocabulary() -> set[str]:
    """Lowercase words of all baseline and extended prompts (see `words`)."""
    return {w for p in _prompts() for w in p.words}


def _splices(p: _Prompt, q: _Prompt, need: set[str]) -> list[tuple[int, int, str]]:
    """(shared, gain, line) for every way of joining p and q at a word they share.

    "suffix" lines are q up to the shared word, then p from it; "prefix" lines are p up to the
    shared word, then q from it. `shared` counts the words p and q have in common around the
    joint (1 = the joint word only), so with shared >= 2 each three-word window across the
    joint occurs in a real prompt and the line reads naturally; `gain` counts needed words of p
    the line carries.
    """
    out = []
    for i in range(1, len(p.words)):
        for j in range(1, len(q.words)):
            if p.words[i] != q.words[j]:
                continue
            shared = 1 + (p.words[i - 1] == q.words[j - 1])
            shared += (
                i + 1 < len(p.words) and j + 1 < len(q.words) and (p.words[i + 1] == q.words[j + 1])
            )
            gain_s = len(set(p.words[i:]) & need)
            gain_p = len(set(p.words[:i]) & need)
            if gain_s:
                out.append((shared, gain_s, q.text[: q.starts[j]] + p.text[p.starts[i] :]))
            if gain_p:
                out.append((shared, gain_p, p.text[: p.starts[i]] + q.text[q.starts[j] :]))
    return out


def _coverage_lines(
    missing: set[str], rng: random.Random, banned: _Banned, seen: set[str]
) -> list[str]:
    """Few lines that together contain every word of `missing`, made from the prompts.

    Greedy over the prompts (in an order drawn from `rng`): while a prompt holds a still-missing
    word, take the first acceptable line among, in order of how naturally they read: splices
    with a prompt of the same class sharing two or more words at the joint; the prompt with its
    emotion word swapped for an interchangeable one (`SWAP_GROUPS`); same-class splices at a
    single shared word; splices with another class (two shared words, then one). "Acceptable":
    carries a missing word of the prompt, is new, and contains no dataset text. Half of the
    lines get a neutral clause in front, as emotional language after neutral context is what
    the corpus teaches.
    """
    need = set(missing)
    items = _prompts()
    order = list(range(len(items)))
    rng.shuffle(order)
    out: list[str] = []

    def ok(line: str, p_need: set[str]) -> bool:
        return (
            bool(p_need & set(words(line)))
            and line.casefold() not in seen
            and not banned.hits(line)
        )

    def candidates(p: _Prompt, same: list[_Prompt], other: list[_Prompt]):
        # Lazily, best-reading first; see the docstring for the order.
        for pool, min_shared in ((same, 2), (None, 0), (same, 1), (other, 2), (other, 1)):
            if pool is None:
                yield from _swaps(p)
                continue
            cands = [c for q in pool for c in _splices(p, q, need) if c[0] >= min_shared]
            rng.shuffle(cands)
            cands.sort(key=lambda c: (-c[0], -c[1]))
            yield from (c[2] for c in cands)

    for k in order:
        p = items[k]
        same = [q for q in items if q is not p and q.emotion == p.emotion]
        other = [q for q in items if q.emotion != p.emotion]
        while p_need := need & set(p.words):
            best = next((x for x in candidates(p, same, other) if ok(x, p_need)), None)
            if best is None:
                break
            if rng.random() < 0.5:
                best = _fill(rng.choice(NEUTRAL_CLAUSES), rng) + " " + best
            seen.add(best.casefold())
            out.append(best)
            need -= set(words(best))
    return out


def build_corpus(n_lines: int = 4000, seed: int = 0, cover_prompts: bool = True) -> list[str]:
    """`n_lines` distinct training lines, deterministic in (n_lines, seed, cover_prompts).

    With `cover_prompts` (default) every word of the baseline/extended prompts occurs in some
    line: template lines cover most, and lines spliced from two prompts the rest (a few hundred;
    `n_lines` must leave room for them). No line contains a dataset text (word level,
    case-folded, punctuation ignored).
    """
    if not isinstance(n_lines, int) or isinstance(n_lines, bool) or n_lines < 1:
        raise ValueError(f"n_lines={n_lines!r}; pass a positive int such as 4000")
    rng = random.Random(seed)
    banned = _Banned(dataset_texts())
    seen: set[str] = set()

    def draw(n: int) -> list[str]:
        out: list[str] = []
        attempts = 0
        while len(out) < n:
            attempts += 1
            if attempts > 50 * n + 1000:
                raise RuntimeError(f"could not draw {n} distinct template lines; add templates")
            line = _template_line(rng)
            if line.casefold() in seen or banned.hits(line):
                continue
            seen.add(line.casefold())
            out.append(line)
        return out

    templ = draw(n_lines)
    cover: list[str] = []
    if cover_prompts:
        vocab = prompt_vocabulary()
        for _ in range(10):
            kept = templ[: n_lines - len(cover)]
            missing = vocab - {w for line in cover + kept for w in words(line)}
            if not missing:
                break
            more = _coverage_lines(missing, rng, banned, seen)
            if not more:
                break
            cover += more
            if len(cover) > n_lines:
                raise ValueError(
                    f"n_lines={n_lines} is smaller than the {len(cover)} lines needed to cover "
                    "the prompt vocabulary; pass a larger n_lines or cover_prompts=False"
                )
        templ = templ[: n_lines - len(cover)]
        missing = vocab - {w for line in cover + templ for w in words(line)}
        if missing:
            raise RuntimeError(
                f"prompt words not covered by the corpus: {sorted(missing)[:10]}; no other "
                "prompt shares a word with theirs, reword one in jaxcirc/prompts.py"
            )
    lines = cover + templ
    rng.shuffle(lines)
    return lines


def split_corpus(
    lines: Sequence[str], held_out_frac: float = 0.1, seed: int = 0
) -> tuple[list[str], list[str]]:
    """Split lines into (train, held_out) at random, deterministically in `seed`.

    held_out gets round(held_out_frac * len(lines)) lines, at least 1 and at most len - 1; each
    part keeps the input order.
    """
    if not 0.0 < held_out_frac < 1.0:
        raise ValueError(f"held_out_frac={held_out_frac}; pass a fraction in (0, 1), e.g. 0.1")
    n = len(lines)
    if n < 2:
        raise ValueError(f"lines has {n} entries; need at least 2 to split")
    k = min(max(round(held_out_frac * n), 1), n - 1)
    held = set(random.Random(seed).sample(range(n), k))
    train = [line for i, line in enumerate(lines) if i not in held]
    held_out = [line for i, line in enumerate(lines) if i in held]
    return train, held_out
