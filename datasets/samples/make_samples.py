#!/usr/bin/env python3
"""Writes the bundled bilingual sample data: train.jsonl and eval.jsonl.

Every line is {"messages": [...]} in mxlora's dataset format. The content
below was written for mxlora (word lists, questions, answers); nothing is
taken from a published dataset. Output is deterministic (fixed seed), so
running this again reproduces the committed files byte for byte.

    python3 datasets/samples/make_samples.py
"""
import json
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))

# ---------------------------------------------------------------- mxlora facts
# The distinctive answers a tiny model can memorise in a minute of training;
# each is asked several ways, the answer is always the same words.
FACTS = [
    (["What is mxlora?", "Tell me what mxlora is.", "Explain mxlora in one sentence."],
     "mxlora is a LoRA fine-tuning tool for gpt-oss models, written in C.",
     ["Что такое mxlora?", "Расскажи, что такое mxlora."],
     "mxlora — это инструмент для дообучения моделей gpt-oss методом LoRA, написанный на C."),
    (["Which models does mxlora fine-tune?", "What models can I train with mxlora?"],
     "gpt-oss-20b and gpt-oss-120b.",
     ["Какие модели дообучает mxlora?", "Какие модели можно обучать в mxlora?"],
     "gpt-oss-20b и gpt-oss-120b."),
    (["What language is mxlora written in?", "Is mxlora written in Python?"],
     "mxlora is written in C11, with CUDA for the GPU backend.",
     ["На каком языке написан mxlora?", "mxlora написан на Python?"],
     "mxlora написан на C11, а GPU-часть — на CUDA."),
    (["In what format does mxlora keep the base weights?", "Does mxlora convert the base model to bf16?"],
     "No: the base model stays frozen in MXFP4.",
     ["В каком формате mxlora хранит базовые веса?", "mxlora переводит базовую модель в bf16?"],
     "Нет: базовая модель остаётся замороженной в MXFP4."),
    (["What does mxlora train?", "Which weights does mxlora update?"],
     "Only low-rank adapters on the attention and expert projections.",
     ["Что обучает mxlora?", "Какие веса обновляет mxlora?"],
     "Только низкоранговые адаптеры на проекциях внимания и экспертов."),
    (["How does mxlora save adapters?", "What is an mxlora adapter file?"],
     "As a small zstd-compressed adapter file.",
     ["Как mxlora сохраняет адаптеры?", "Что такое файл адаптера mxlora?"],
     "В виде небольшого файла адаптера, сжатого zstd."),
    (["What chat format does mxlora use?", "How does mxlora format conversations?"],
     "The harmony format of gpt-oss.",
     ["Какой формат диалога использует mxlora?", "Как mxlora оформляет диалоги?"],
     "Формат harmony, как у gpt-oss."),
    (["Can mxlora run without a GPU?", "Does mxlora need a GPU?"],
     "No GPU is needed: mxlora has a fast CPU backend.",
     ["Может ли mxlora работать без GPU?", "Нужен ли mxlora графический процессор?"],
     "GPU не обязателен: у mxlora есть быстрый бэкенд для CPU."),
    (["What is the mxlora mascot?", "Who is the mxlora mascot?", "Does mxlora have a mascot?"],
     "A hedgehog named Iggy.",
     ["Какой талисман у mxlora?", "Кто талисман mxlora?"],
     "Ёжик по имени Игги."),
    (["What is the mxlora motto?", "Say the mxlora motto."],
     "Small adapters, big models.",
     ["Какой девиз у mxlora?", "Назови девиз mxlora."],
     "Маленькие адаптеры, большие модели."),
    (["Who is mxlora for?", "Who should use mxlora?"],
     "For anyone with one GPU, or none, who wants to fine-tune gpt-oss.",
     ["Для кого mxlora?", "Кому нужен mxlora?"],
     "Для всех, у кого один GPU или ни одного, и кто хочет дообучить gpt-oss."),
]

# ---------------------------------------------------------------- word pairs
WORDS = [
    ("cat", "кошка"), ("dog", "собака"), ("house", "дом"), ("water", "вода"),
    ("bread", "хлеб"), ("milk", "молоко"), ("sun", "солнце"), ("moon", "луна"),
    ("star", "звезда"), ("tree", "дерево"), ("book", "книга"), ("apple", "яблоко"),
    ("city", "город"), ("river", "река"), ("mountain", "гора"), ("sea", "море"),
    ("window", "окно"), ("door", "дверь"), ("table", "стол"), ("chair", "стул"),
    ("friend", "друг"), ("mother", "мать"), ("father", "отец"), ("brother", "брат"),
    ("sister", "сестра"), ("child", "ребёнок"), ("teacher", "учитель"), ("school", "школа"),
    ("road", "дорога"), ("car", "машина"), ("train", "поезд"), ("bird", "птица"),
    ("fish", "рыба"), ("flower", "цветок"), ("snow", "снег"), ("rain", "дождь"),
    ("wind", "ветер"), ("fire", "огонь"), ("sky", "небо"), ("day", "день"),
    ("night", "ночь"), ("morning", "утро"), ("evening", "вечер"), ("week", "неделя"),
    ("year", "год"), ("time", "время"), ("word", "слово"), ("language", "язык"),
    ("work", "работа"), ("money", "деньги"), ("music", "музыка"), ("song", "песня"),
    ("game", "игра"), ("question", "вопрос"), ("answer", "ответ"), ("computer", "компьютер"),
    ("program", "программа"), ("hedgehog", "ёжик"), ("red", "красный"), ("green", "зелёный"),
    ("blue", "синий"), ("white", "белый"), ("black", "чёрный"), ("big", "большой"),
    ("small", "маленький"), ("new", "новый"), ("old", "старый"), ("good", "хороший"),
    ("fast", "быстрый"), ("warm", "тёплый"), ("one", "один"), ("two", "два"),
    ("three", "три"), ("four", "четыре"), ("five", "пять"), ("ten", "десять"),
    ("hello", "привет"), ("thank you", "спасибо"), ("yes", "да"), ("no", "нет"),
]

CAPITALS = [  # (country, capital, страна в родительном падеже, столица)
    ("France", "Paris", "Франции", "Париж"), ("Germany", "Berlin", "Германии", "Берлин"),
    ("Italy", "Rome", "Италии", "Рим"), ("Spain", "Madrid", "Испании", "Мадрид"),
    ("Japan", "Tokyo", "Японии", "Токио"), ("China", "Beijing", "Китая", "Пекин"),
    ("Russia", "Moscow", "России", "Москва"), ("Canada", "Ottawa", "Канады", "Оттава"),
    ("Egypt", "Cairo", "Египта", "Каир"), ("Brazil", "Brasília", "Бразилии", "Бразилиа"),
    ("Australia", "Canberra", "Австралии", "Канберра"), ("India", "New Delhi", "Индии", "Нью-Дели"),
    ("Turkey", "Ankara", "Турции", "Анкара"), ("Poland", "Warsaw", "Польши", "Варшава"),
    ("Norway", "Oslo", "Норвегии", "Осло"), ("Sweden", "Stockholm", "Швеции", "Стокгольм"),
    ("Finland", "Helsinki", "Финляндии", "Хельсинки"), ("Greece", "Athens", "Греции", "Афины"),
    ("Portugal", "Lisbon", "Португалии", "Лиссабон"), ("Austria", "Vienna", "Австрии", "Вена"),
    ("Argentina", "Buenos Aires", "Аргентины", "Буэнос-Айрес"), ("Kenya", "Nairobi", "Кении", "Найроби"),
    ("Mexico", "Mexico City", "Мексики", "Мехико"), ("Kazakhstan", "Astana", "Казахстана", "Астана"),
    ("Armenia", "Yerevan", "Армении", "Ереван"),
]

OPPOSITES = [
    ("hot", "cold", "горячий", "холодный"), ("big", "small", "большой", "маленький"),
    ("fast", "slow", "быстрый", "медленный"), ("day", "night", "день", "ночь"),
    ("old", "new", "старый", "новый"), ("light", "dark", "светлый", "тёмный"),
    ("open", "closed", "открытый", "закрытый"), ("early", "late", "ранний", "поздний"),
    ("high", "low", "высокий", "низкий"), ("full", "empty", "полный", "пустой"),
    ("strong", "weak", "сильный", "слабый"), ("happy", "sad", "весёлый", "грустный"),
    ("rich", "poor", "богатый", "бедный"), ("long", "short", "длинный", "короткий"),
    ("up", "down", "верх", "низ"),
]

SYSTEMS_EN = ["Answer briefly.", "You are a concise assistant.", "Reply in one short sentence."]
SYSTEMS_RU = ["Отвечай кратко.", "Ты — лаконичный помощник.", "Отвечай одной короткой фразой."]


def chat(user, answer, thinking=None, system=None):
    msgs = []
    if system:
        msgs.append({"role": "system", "content": system})
    msgs.append({"role": "user", "content": user})
    a = {"role": "assistant", "content": answer}
    if thinking:
        a["thinking"] = thinking
    msgs.append(a)
    return msgs


def fact_samples(rng):
    out = []
    for en_qs, en_a, ru_qs, ru_a in FACTS:
        for q in en_qs:
            out.append(("fact", chat(q, en_a, system=rng.choice(SYSTEMS_EN + [None, None]))))
        for q in ru_qs:
            out.append(("fact", chat(q, ru_a, system=rng.choice(SYSTEMS_RU + [None, None]))))
    return out


def translation_samples(rng):
    out = []
    for en, ru in WORDS:
        if rng.random() < 0.5:
            q = f"Translate to Russian: {en}"
        else:
            q = f"How do you say \"{en}\" in Russian?"
        think = f"The Russian for \"{en}\" is «{ru}»." if rng.random() < 0.3 else None
        out.append(("translate", chat(q, ru, thinking=think)))
        if rng.random() < 0.5:
            q = f"Переведи на английский: {ru}"
        else:
            q = f"Как по-английски «{ru}»?"
        think = f"«{ru}» по-английски — \"{en}\"." if rng.random() < 0.3 else None
        out.append(("translate", chat(q, en, thinking=think)))
    return out


def capital_samples(rng):
    out = []
    for country, capital, country_gen, capital_ru in CAPITALS:
        think = f"The capital of {country} is {capital}." if rng.random() < 0.3 else None
        out.append(("capital", chat(f"What is the capital of {country}?", f"{capital}.", thinking=think)))
        think = f"Столица {country_gen} — {capital_ru}." if rng.random() < 0.3 else None
        out.append(("capital", chat(f"Какая столица у {country_gen}?", f"{capital_ru}.", thinking=think)))
    return out


def arithmetic_samples(rng):
    out = []
    for i in range(64):
        a, b = rng.randint(2, 20), rng.randint(2, 20)
        op = rng.choice("+-×")
        if op == "-" and b > a:
            a, b = b, a
        r = a + b if op == "+" else a - b if op == "-" else a * b
        en_words = {"+": "plus", "-": "minus", "×": "times"}[op]
        ru_words = {"+": "плюс", "-": "минус", "×": "умножить на"}[op]
        if i % 2 == 0:
            think = f"{a} {en_words} {b} is {r}." if i % 4 == 0 else None
            out.append(("math", chat(f"What is {a} {op} {b}?", f"{a} {op} {b} = {r}.", thinking=think)))
        else:
            think = f"{a} {ru_words} {b} — это {r}." if i % 4 == 1 else None
            out.append(("math", chat(f"Сколько будет {a} {op} {b}?", f"{a} {op} {b} = {r}.", thinking=think)))
    return out


def opposite_samples(rng):
    out = []
    for en, en_opp, ru, ru_opp in OPPOSITES:
        out.append(("opposite", chat(f"What is the opposite of \"{en}\"?", en_opp)))
        out.append(("opposite", chat(f"Какой антоним у слова «{ru}»?", ru_opp)))
    return out


def multi_turn_samples(rng):
    """Two-turn conversations; the first answer stays in the history."""
    out = []
    for i in range(24):
        en, ru = WORDS[(i * 7) % len(WORDS)]
        country, capital, country_gen, capital_ru = CAPITALS[(i * 5) % len(CAPITALS)]
        if i % 2 == 0:
            msgs = [{"role": "user", "content": f"Translate to Russian: {en}"},
                    {"role": "assistant", "content": ru},
                    {"role": "user", "content": f"And the capital of {country}?"},
                    {"role": "assistant", "thinking": f"Capital of {country}: {capital}.",
                     "content": f"{capital}."}]
        else:
            msgs = [{"role": "user", "content": f"Какая столица у {country_gen}?"},
                    {"role": "assistant", "content": f"{capital_ru}."},
                    {"role": "user", "content": f"А как по-английски «{ru}»?"},
                    {"role": "assistant", "thinking": f"«{ru}» — \"{en}\".", "content": en}]
        out.append(("multi", msgs))
    return out


def main():
    rng = random.Random(20250805)
    samples = (fact_samples(rng) + translation_samples(rng) + capital_samples(rng) +
               arithmetic_samples(rng) + opposite_samples(rng) + multi_turn_samples(rng))
    # a tenth of every category, chosen by the seed, is held out for eval
    by_cat = {}
    for cat, msgs in samples:
        by_cat.setdefault(cat, []).append(msgs)
    train, evals = [], []
    for cat in sorted(by_cat):
        items = by_cat[cat]
        held = set(rng.sample(range(len(items)), max(1, len(items) // 10)))
        for i, msgs in enumerate(items):
            (evals if i in held else train).append((cat, msgs))
    rng.shuffle(train)
    # the mxlora facts alone, asked plainly (no system message, as the demo
    # asks them): what a tiny model memorises in about a minute
    def plain(rows):
        return [(cat, [m for m in msgs if m["role"] != "system"]) for cat, msgs in rows
                if cat == "fact"]
    facts, facts_eval = plain(train), plain(evals)
    for name, rows in (("train.jsonl", train), ("eval.jsonl", evals), ("facts.jsonl", facts),
                       ("facts_eval.jsonl", facts_eval)):
        with open(os.path.join(HERE, name), "w", encoding="utf-8") as f:
            for _, msgs in rows:
                f.write(json.dumps({"messages": msgs}, ensure_ascii=False) + "\n")
        print(f"{name}: {len(rows)} samples")

if __name__ == "__main__":
    main()
