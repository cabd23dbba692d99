"""Offline embedders compared: `local-hash` (HashEmbedder) vs `wordllama-256` (WordLlamaEmbedder).

1. Throughput: texts embedded per second, one text per `embed` call (batch 1) and 64 per call (batch 64), over the
   short texts of the retrieval set below (passages and questions, 5-25 words each).
2. Retrieval quality on a small labelled set written for this benchmark: 60 passages a small business (a hair and
   beauty salon) would store as knowledge (opening hours, prices, policies, appointments, ...) and 38 customer
   questions, each with the one passage that answers it, mostly worded differently from it. Every passage is a
   candidate for every question (exact cosine ranking); reported: recall@1, recall@5, MRR, and the mean cosine of
   the right passage vs all the others (what the store's score floors in shared/memory/store.py compare against).

Usage:  .venv/bin/python bench/bench_embedders.py [--seconds 2]
No network and no database: both embedders are offline.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from shared.memory.embedders import HashEmbedder  # noqa: E402
from shared.memory.wordllama_embedder import WordLlamaEmbedder  # noqa: E402

PASSAGES = [
    # 0-9 opening hours and location
    "We are open Monday to Friday from 9am to 7pm.",
    "On Saturdays the salon opens at 8am and closes at 4pm.",
    "The salon is closed on Sundays and on public holidays.",
    "Late evenings: every Thursday we stay open until 9pm.",
    "Over Christmas we close from 24 December and reopen on 2 January.",
    "You will find us at 14 Market Street, next to the post office.",
    "Free parking is available behind the building; the car park entrance is on Mill Lane.",
    "The nearest bus stop is Market Square, served by lines 3 and 7.",
    "The salon is on the ground floor and fully wheelchair accessible.",
    "Our phone line is staffed from 9am to 5pm on weekdays.",
    # 10-24 prices and services
    "A women's cut and blow-dry costs 45 euros.",
    "A men's haircut costs 25 euros; a beard trim is 10 euros extra.",
    "Children under 12 get a haircut for 15 euros.",
    "Full head colour starts at 70 euros, depending on hair length.",
    "Highlights and balayage start at 95 euros and take about three hours.",
    "A manicure costs 30 euros and a gel manicure 40 euros.",
    "A classic pedicure costs 35 euros.",
    "Eyebrow shaping is 12 euros; eyebrow tinting is 10 euros.",
    "A 60-minute relaxing massage costs 55 euros.",
    "Bridal hair and make-up packages start at 180 euros, trial session included.",
    "A keratin smoothing treatment costs 150 euros and lasts up to four months.",
    "Students get 10 percent off every service on weekdays with a valid student card.",
    "Seniors over 65 receive a 15 percent discount on Tuesdays.",
    "Gift vouchers are available in any amount from 20 euros and are valid for one year.",
    "Our loyalty card gives you the tenth haircut free.",
    # 25-39 policies
    "Please cancel at least 24 hours in advance; late cancellations are charged 50 percent of the service.",
    "If you do not show up without notice, the full price of the appointment is charged.",
    "If you arrive more than 15 minutes late we may have to shorten or reschedule your service.",
    "We accept cash, all major credit cards, Apple Pay and Google Pay.",
    "Cheques are not accepted.",
    "Products can be returned unopened within 14 days with the receipt for a full refund.",
    "If you are unhappy with your haircut, tell us within 7 days and we will fix it for free.",
    "Colour services require a skin allergy patch test at least 48 hours before the appointment.",
    "Well-behaved dogs are welcome in the salon.",
    "For hygiene reasons, all tools are sterilised after every client.",
    "A deposit of 30 euros is required to book colour services and bridal packages.",
    "Tips are appreciated but never expected.",
    "Children under 10 must be accompanied by an adult.",
    "Our privacy policy: we keep your phone number only to confirm appointments and never share it.",
    "Group bookings of five or more people need a deposit of 20 percent.",
    # 40-49 appointments
    "Appointments can be booked online through our website, by phone, or here on WhatsApp.",
    "Walk-ins are welcome on weekday mornings if a stylist is free.",
    "You will receive a reminder message the day before your appointment.",
    "To reschedule, reply to your reminder message or call us.",
    "Appointments can be booked up to three months ahead.",
    "Haircut appointments take about 45 minutes; colour appointments take two to three hours.",
    "You can ask for a specific stylist when booking; Anna and Marco work Monday to Friday.",
    "A free 15-minute consultation is available before any colour or chemical treatment.",
    "On your first visit, please arrive 10 minutes early to fill in a short client form.",
    "Home visits for clients who cannot leave the house are possible on Wednesdays.",
    # 50-59 products, shop, misc
    "We sell professional shampoos and conditioners from 12 euros.",
    "All our hair products are vegan and cruelty-free.",
    "Free Wi-Fi is available for customers; the password is on the card at reception.",
    "We offer coffee, tea and water free of charge while you wait.",
    "We are hiring: send your CV to jobs@salon.example if you are a qualified stylist.",
    "Our team speaks English, German and Italian.",
    "The salon was founded in 2009 by Anna Keller.",
    "Follow us on Instagram for our latest styles and special offers.",
    "Wedding parties can book the whole salon on Sunday mornings by arrangement.",
    "Lost property is kept at reception for one month.",
]

QUESTIONS = [  # (question, index of the passage that answers it)
    ("What time do you close on weekdays?", 0),
    ("Are you open Saturday morning?", 1),
    ("Can I come by on Sunday?", 2),
    ("Do you have any late opening in the evening?", 3),
    ("Are you open between Christmas and New Year?", 4),
    ("What is your address?", 5),
    ("Where can I park my car?", 6),
    ("How do I get there by public transport?", 7),
    ("Can I get in with a wheelchair?", 8),
    ("How much is a haircut for a woman?", 10),
    ("What do you charge for a men's cut?", 11),
    ("How much for my 8 year old son's haircut?", 12),
    ("What's the price to dye my whole hair?", 13),
    ("How long does balayage take?", 14),
    ("How much are gel nails?", 15),
    ("Do you do foot treatments and what do they cost?", 16),
    ("Can you do my eyebrows?", 17),
    ("Do you offer massages?", 18),
    ("I'm getting married, do you do wedding hair and makeup?", 19),
    ("Is there a discount for students?", 21),
    ("Do pensioners get a reduced price?", 22),
    ("Can I buy a gift card for my mother?", 23),
    ("What happens if I cancel my appointment the same day?", 25),
    ("What if I miss my appointment completely?", 26),
    ("I'm running 20 minutes late, is that a problem?", 27),
    ("Can I pay by card?", 28),
    ("Can I return a shampoo I bought?", 30),
    ("I don't like my new haircut, what can I do?", 31),
    ("Do I need an allergy test before colouring?", 32),
    ("Can I bring my dog?", 33),
    ("Do I have to pay anything up front when booking a colour?", 35),
    ("How can I make a booking?", 40),
    ("Can I just walk in without an appointment?", 41),
    ("Will you remind me of my appointment?", 42),
    ("How long will a haircut take?", 45),
    ("Do you sell hair care products?", 50),
    ("Is there wifi in the salon?", 52),
    ("Which languages do your staff speak?", 55),
]


def throughput(embedder, texts: list[str], batch: int, seconds: float) -> float:
    """Texts per second, `batch` texts per `embed` call, cycling through `texts` for at least `seconds`."""
    embedder.embed(texts[:batch])  # warm-up (loads a model once)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for i in range(0, len(texts) - batch + 1, batch):
            embedder.embed(texts[i:i + batch])
            done += batch
    return done / (time.perf_counter() - start)


def retrieval(embedder) -> dict[str, float]:
    """recall@1, recall@5, MRR, and mean cosine of the right passage vs the others, over QUESTIONS."""
    p = np.array(embedder.embed(PASSAGES))
    q = np.array(embedder.embed([text for text, _ in QUESTIONS]))
    scores = q @ p.T
    gold = np.array([i for _, i in QUESTIONS])
    ranks = np.array([1 + int((row > row[g]).sum()) for row, g in zip(scores, gold)])
    right = scores[np.arange(len(gold)), gold]
    others = np.delete(scores.ravel(), np.arange(len(gold)) * scores.shape[1] + gold)
    return {"r@1": float((ranks == 1).mean()), "r@5": float((ranks <= 5).mean()), "mrr": float((1 / ranks).mean()),
            "cos_right": float(right.mean()), "cos_others": float(others.mean()),
            "others_p95": float(np.percentile(others, 95))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per throughput measurement")
    args = parser.parse_args()
    texts = PASSAGES + [text for text, _ in QUESTIONS]
    assert len(QUESTIONS) >= 30 and all(0 <= i < len(PASSAGES) for _, i in QUESTIONS)
    print(f"{len(PASSAGES)} passages, {len(QUESTIONS)} questions; throughput over {len(texts)} texts, "
          f"{args.seconds:g} s each")
    print(f"{'embedder':<14} {'batch 1/s':>10} {'batch 64/s':>11} {'r@1':>6} {'r@5':>6} {'MRR':>6} "
          f"{'cos right':>10} {'cos others':>11} {'others p95':>11}")
    for embedder in (HashEmbedder(256), WordLlamaEmbedder()):
        one = throughput(embedder, texts, 1, args.seconds)
        many = throughput(embedder, texts, 64, args.seconds)
        r = retrieval(embedder)
        print(f"{embedder.name:<14} {one:>10,.0f} {many:>11,.0f} {r['r@1']:>6.3f} {r['r@5']:>6.3f} {r['mrr']:>6.3f} "
              f"{r['cos_right']:>10.3f} {r['cos_others']:>11.3f} {r['others_p95']:>11.3f}")


if __name__ == "__main__":
    main()
