"""Japanese word lists for scoring generated text: keigo politeness markers and emotion keywords.

Japanese is written without spaces and inflects, so these lists match the LEMMAS (dictionary
forms) of UniDic short units as fugashi with unidic-lite analyses them (いただけ -> 頂く,
ござい -> 御座る, 怒っ -> 怒る, ありがと -> 有り難う), not surface strings. The matcher is
`jaxcirc.core.scoring_ja`; the lemmas were read off its analyses of the forms in the comments.

Entry syntax: a tuple of keys, one key per consecutive morpheme. A key is

- "lemma": the UniDic lemma, e.g. "頂く";
- "lemma:pos1": lemma and first part-of-speech field, e.g. "御:接頭辞" (the prefix お-/ご-/御-);
- "lemma=kanaBase": lemma and the kana of its base form, where UniDic gives two readings one
  lemma: "居る=オル" is humble おる (おります), not plain いる (います).

Entries of one list never count twice on the same morphemes: the longest entry starting at a
morpheme wins and matching resumes after it (すみません = 済む ます ず is one apology hit).

Politeness is kept apart from the emotions. The politeness markers are the grammatical means of
keigo (honorific auxiliaries, humble and respectful verbs, the honorific prefix and suffix), and
no emotion keyword is one of them: ありがとう, 感謝, ごめん, 申し訳, 詫び count only as emotion
words, the keigo around them (ござい, ます, いたす, 申し上げる, お-) only as politeness. So plain
ありがとう scores politeness 0 and ありがとうございます 2 (御座る, ます); 申し訳ない 0 and
申し訳ございません 2. (The English lists in `jaxcirc.data.lexicon` differ here: their
POLITENESS_MARKERS include "thank", "thanks", "sorry" and "appreciate", so English gratitude and
apology words also count as politeness.) Where an emotion keyword contains a politeness lemma
(ます in すみません, the polite form of すまない), each list counts it on its own terms.

Left out on purpose, as too ambiguous for a keyword counter:
- 為さる (なさる): lexicalised in ごめんなさい and おやすみなさい, which are not keigo.
- れる / られる: the honorific passive is the same auxiliary as the plain passive and potential.
- 失礼: 失礼します is everyday courtesy, 失礼しました an apology; it is in neither list.
- 許す alone: 許さない / 許せません are anger, 許してください is an apology request; only the
  negated forms are listed (anger).
- キレる (lemma 切れる "to be cut, run out"), むかむか (also nausea), うんざり (weariness), 最悪 and
  ひどい (negative evaluation, not specifically anger), どうも (thanks or "somehow").
"""

from __future__ import annotations

from jaxcirc.data.emotions import EMOTIONAL as EMOTIONS  # noqa: F401 - the emotions lexica cover

# Keigo markers: polite (teineigo), humble (kenjougo), respectful (sonkeigo), and the honorific
# prefix/suffix (bikago). A text's politeness is their count per 10 morphemes.
POLITENESS_MARKERS_JA: tuple[tuple[str, ...], ...] = (
    # teineigo: the polite register
    ("です",),  # polite copula: 雨です, ありがたいです
    ("ます",),  # polite auxiliary: 行きます, ありません, すみません, 頂きました
    ("御座る",),  # ござる: ございます, でございます (the most formal polite copula/existential)
    # kenjougo: humble verbs (the speaker lowers their own action)
    ("致す",),  # いたす: 感謝いたします, 失礼いたしました
    ("申す",),  # もうす: 田中と申します
    ("申し上げる",),  # もうしあげる: お詫び申し上げます, お礼申し上げます
    ("頂く",),  # いただく: ご協力いただき, 送っていただけますか
    ("伺う",),  # うかがう: 明日伺います (visit / ask, humble)
    ("存ずる",),  # ぞんずる: 存じます, 存じ上げる
    ("参る",),  # まいる: 参ります (go / come, humble)
    ("差し上げる",),  # さしあげる: ご連絡を差し上げます
    ("承る",),  # うけたまわる: ご注文を承りました
    ("居る=オル",),  # おる: おります (humble いる; plain いる/います share the lemma 居る)
    ("拝見",),  # はいけん: 拝見しました (humble "see")
    ("恐れ入る",),  # おそれいる: 恐れ入ります (humble cushion phrase before a request)
    # sonkeigo: respectful verbs (the listener's action raised)
    ("いらっしゃる",),  # いらっしゃいます (be / come / go, respectful)
    ("仰る",),  # おっしゃる: おっしゃいました
    ("下さる",),  # くださる: ご連絡ください, 教えてくださった
    ("召し上がる",),  # めしあがる: お召し上がりください
    ("御覧",),  # ごらん: ご覧ください
    # bikago / honorific affixes
    ("御:接頭辞",),  # お-/ご-/御- on a noun or verb stem: お知らせ, ご連絡, お待ち, 御礼
    ("様:接尾辞",),  # -さま: お客様, 田中様
)

# Emotion keywords on lemmas, per emotion: the words that express the emotion itself.
EMOTION_KEYWORDS_JA: dict[str, tuple[tuple[str, ...], ...]] = {
    "gratitude": (
        ("有り難う",),  # ありがとう, ありがと (ありがとうございます: ございます is politeness)
        ("有り難い",),  # ありがたい, ありがたく思います
        ("感謝",),  # 感謝します, 感謝いたします, 感謝しています
        ("礼",),  # お礼, 御礼 (the prefix counts as politeness); 失礼 and 礼儀 are other lemmas
        ("謝意",),  # 謝意を表します (formal)
        ("助かる",),  # 助かりました, 助かったよ: the everyday "that helped, thanks"
        ("サンキュー-thank you",),  # サンキュー, サンキュ (UniDic's lemma for the loanword)
        ("恩", "に", "着る"),  # 恩に着る: "I owe you one"
    ),
    "anger": (
        ("怒る",),  # 怒る, 怒っている, 怒ってる
        ("怒り",),  # 怒りを覚える
        ("激怒",),  # 激怒する
        ("憤る",),  # 憤っている
        ("憤り",),  # 憤りを感じます
        ("腹立つ",),  # 腹立つ (one word)
        ("腹立たしい",),  # 腹立たしい
        ("腹", "が", "立つ"),  # 腹が立つ, 腹が立ちます, 腹が立った
        ("頭", "に", "来る"),  # 頭に来る, 頭にきた
        ("むかつく",),  # むかつく, ムカつく
        ("苛々",),  # イライラ, いらいら
        ("苛立つ",),  # 苛立つ
        ("苛立ち",),  # 苛立ちを覚える
        ("ふざける",),  # ふざけるな, ふざけないで (also "to fool around": rare in these texts)
        ("許す", "ない"),  # 許さない, 許せない (negated forgive: "I won't stand for it")
        ("許す", "ます", "ず"),  # 許しません, 許せません
        ("不", "愉快"),  # 不愉快 (愉快 alone is positive)
    ),
    "apology": (
        ("謝る",),  # 謝ります, 謝りたい
        ("謝罪",),  # 謝罪します, 謝罪いたします
        ("詫びる",),  # 詫びる; お詫び申し上げます (the verb stem)
        ("詫び",),  # お詫びします (the noun)
        ("申し訳",),  # 申し訳ない, 申し訳ありません, 申し訳ございません
        ("御免",),  # ごめん, ごめんね, ごめんなさい
        ("済む", "ます", "ず"),  # すみません, すいません (polite form: ます also politeness)
        ("済む", "ない"),  # すまない
        ("済む", "ず"),  # すまん
    ),
}

# Candidate single words per emotion for logit-difference measures on a Japanese tokenizer
# (surface strings, no leading space: sentencepiece marks word starts itself). Whether each is one
# token depends on the tokenizer: `jaxcirc.core.measures.word_token_ids` keeps the single-token
# ones and reports the rest. Each is a form of a keyword above (tests check it).
EMOTION_LOGIT_WORDS_JA: dict[str, tuple[str, ...]] = {
    "gratitude": ("ありがとう", "感謝", "お礼", "ありがたい"),
    "anger": ("怒り", "怒る", "腹立たしい", "激怒", "イライラ"),
    "apology": ("ごめん", "申し訳", "すみません", "謝罪", "お詫び"),
}
