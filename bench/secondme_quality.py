"""What the embedded model (SmolLM2-135M-Instruct) answers, judged: a fixed set of English and
Ukrainian prompts, asked under each system prompt and sampling set, through the ``local`` provider
exactly as the service runs it (the GGUF's chat template, the repetition penalty, the stop on a
repeated line).

    PYTHONPATH=src .venv/bin/python -m bench.secondme_quality [--runs 2] [--max-tokens 96]

Per answer it prints the answer and three judgements: ``script`` (the share of the answer's letters
in the prompt's script, Latin or Cyrillic), ``loop`` (degenerate repetition, see
:func:`degenerate`) and ``echo`` (the answer begins by repeating
the prompt). Then a summary per variant. Sampling at a
temperature above 0 is random: each prompt is asked ``--runs`` times there, once at 0.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
import unicodedata
from collections import Counter
from dataclasses import dataclass

from daarion_city.config import Settings
from daarion_city.secondme.providers.base import ChatMessage, InvokeContext, complete
from daarion_city.secondme.providers.local import LocalProvider

ENGLISH = [
    "What is the capital of France?",
    "Give me three tips for sleeping well.",
    "Explain in two sentences what a chat room is.",
    "Write a short greeting for a new member of our city.",
]
UKRAINIAN = [
    "Яка столиця Франції?",
    "Дай три поради, як краще спати.",
    "Поясни двома реченнями, що таке чат-кімната.",
    "Напиши коротке привітання для нового мешканця нашого міста.",
]
BILINGUAL = (  # the system prompt shipped before issue 18
    "Ти — Second Me, персональний агент користувача в DAARION City. Відповідай коротко, "
    "мовою користувача. You are Second Me, the user's personal agent in DAARION City. "
    "Answer briefly, in the user's language."
)
SYSTEM_PROMPTS = {
    "bilingual": BILINGUAL,
    "english": "You are Second Me, the user's personal assistant in DAARION City. "
    "Answer briefly and clearly.",
    "english-lang": "You are Second Me, the user's personal assistant in DAARION City. "
    "Answer briefly, in the language of the user's message.",
    "default": Settings.model_fields["secondme_system_prompt"].default,
}
SAMPLING = {  # name: (temperature, repeat_penalty)
    "t0.7": (0.7, 1.0),
    "t0.2": (0.2, 1.0),
    "t0.7-rp1.1": (0.7, 1.1),
    "t0.2-rp1.1": (0.2, 1.1),
    "t0-rp1.1": (0.0, 1.1),
}


def script_of(ch: str) -> str:
    name = unicodedata.name(ch, "")
    return name.split(" ", 1)[0].lower() if ch.isalpha() else ""


def script_share(text: str, script: str) -> float:
    """The share of the letters of ``text`` in ``script`` ("latin", "cyrillic"); 0 if none."""
    letters = [script_of(ch) for ch in text if ch.isalpha()]
    return sum(s == script for s in letters) / len(letters) if letters else 0.0


def prompt_script(text: str) -> str:
    return "cyrillic" if script_share(text, "cyrillic") > 0.5 else "latin"


def degenerate(text: str) -> bool:
    """A loop: a repeated line, a word 5-gram twice or 4-gram three times, a letter six times
    in a row, or under 40% distinct words."""
    lines = [line.strip() for line in text.splitlines() if len(line.strip()) >= 4]
    if len(lines) != len(set(lines)) or re.search(r"([^\W\d_])\1{5}", text):
        return True
    words = re.findall(r"\w+", text.lower())
    for n, times in ((5, 2), (4, 3)):
        grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
        if grams and max(grams.values()) >= times:
            return True
    return len(words) >= 12 and len(set(words)) / len(words) < 0.4


def echoes(answer: str, prompt: str) -> bool:
    """The answer begins with the prompt's words (most of them, in order)."""
    said = re.findall(r"\w+", answer.lower())
    asked = re.findall(r"\w+", prompt.lower())
    head = said[: len(asked)]
    same = sum(a == b for a, b in zip(head, asked, strict=False))
    return bool(asked) and same >= 0.6 * len(asked)


@dataclass
class Judged:
    system: str
    sampling: str
    prompt: str
    answer: str
    share: float
    loop: bool
    echo: bool
    seconds: float


async def ask(provider: LocalProvider, system: str, prompt: str) -> tuple[str, float]:
    messages = [ChatMessage("system", system), ChatMessage("user", prompt)]
    started = time.perf_counter()
    done = await complete(provider, messages, InvokeContext("bench", "bench"))
    return done.text, time.perf_counter() - started


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2, help="asks per prompt above temperature 0")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--systems", default=",".join(SYSTEM_PROMPTS))
    parser.add_argument("--sampling", default=",".join(SAMPLING))
    args = parser.parse_args()
    settings = Settings()
    provider = LocalProvider(
        model_path=settings.secondme_local_model_path,
        n_ctx=2048,
        threads=settings.secondme_local_threads,
        max_tokens=args.max_tokens,
        temperature=0.0,
        repeat_penalty=1.0,
    )
    print(f"model {provider.model}, max_tokens {args.max_tokens}, runs {args.runs}")
    results: list[Judged] = []
    for system_name in args.systems.split(","):
        for sampling_name in args.sampling.split(","):
            provider.temperature, provider.repeat_penalty = SAMPLING[sampling_name]
            runs = 1 if provider.temperature == 0 else args.runs
            print(f"\n## system {system_name}, sampling {sampling_name}")
            for prompt in ENGLISH + UKRAINIAN:
                for _ in range(runs):
                    answer, seconds = await ask(provider, SYSTEM_PROMPTS[system_name], prompt)
                    judged = Judged(
                        system_name,
                        sampling_name,
                        prompt,
                        answer,
                        script_share(answer, prompt_script(prompt)),
                        degenerate(answer),
                        echoes(answer, prompt),
                        seconds,
                    )
                    results.append(judged)
                    flat = " ".join(answer.split())
                    print(
                        f"- script {judged.share:4.0%} loop {'yes' if judged.loop else 'no ':3} "
                        f"echo {'yes' if judged.echo else 'no ':3} "
                        f"| {prompt} -> {flat[:150]}"
                    )
    await provider.close()
    print(
        "\n| system prompt | sampling | EN: in Latin (>=90%) | EN: loops | EN: echoes "
        "| UK: in Cyrillic (>=90%) | UK: loops | UK: echoes | s/answer |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for system_name in args.systems.split(","):
        for sampling_name in args.sampling.split(","):
            rows = [r for r in results if (r.system, r.sampling) == (system_name, sampling_name)]
            en = [r for r in rows if r.prompt in ENGLISH]
            uk = [r for r in rows if r.prompt in UKRAINIAN]
            mean = sum(r.seconds for r in rows) / len(rows)
            print(f"| {system_name} | {sampling_name} | {tally(en)} | {tally(uk)} | {mean:.1f} |")


def tally(rows: list[Judged]) -> str:
    n = len(rows)
    good = sum(r.share >= 0.9 for r in rows)
    return f"{good}/{n} | {sum(r.loop for r in rows)}/{n} | {sum(r.echo for r in rows)}/{n}"


if __name__ == "__main__":
    asyncio.run(main())
