"""A deterministic corpus of synthetic clinical notes with planted identifiers, and the scoring of
a redactor against it (tests/audit/test_phi_redaction_recall.py; ``python -m tests.audit.phi_report``
prints the table).

Each note is a few sections of clinical prose (vitals, labs, drugs, eponyms, scores: the words a
redactor must leave alone) with identifiers planted in the ways notes carry them. The values come
from Faker (seeded: the same corpus every run) in several locales, so names and streets are not
ones the redactor was written against; the formats vary on purpose (titles or none, labels or
none, ten date layouts, phone numbers with country codes and extensions, grouped and ungrouped
card numbers of every length).

Scoring is by leak, not by placeholder: an identifier counts as caught when none of its
identifying parts (each word of a name, the digit groups of four or more of a number, the date as
written, the street and house number of an address, the mailbox of an email) survives in the
redacted note, whatever placeholder replaced it.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from faker import Faker

SEED = 20261202
KINDS = (
    "name_titled",
    "name_untitled",
    "mrn_labelled",
    "mrn_unlabelled",
    "dob",
    "phone",
    "email",
    "address",
    "ssn",
    "card",
)


@dataclass(frozen=True)
class Planted:
    kind: str
    value: str
    leaks: tuple[str, ...]  # parts that must not survive redaction


@dataclass
class Note:
    text: str
    planted: list[Planted] = field(default_factory=list)


# --- clinical prose: must come out of redaction unchanged -------------------------------------

CLINICAL_SENTENCES = [
    "Chief Complaint: chest pain radiating to the left arm for 2 hours.",
    "History of Present Illness: intermittent dyspnea on exertion, worse over the past 3 weeks.",
    "Vitals: BP 142/88, HR 96, RR 18, Temp 37.8 C, SpO2 94% on RA.",
    "Labs: WBC 11.2, Hgb 13.1, Plt 250, Na 138, K 4.1, Cr 1.2 mg/dL, eGFR 58.",
    "HbA1c 7.4%, LDL 132 mg/dL, TSH 2.1, INR 1.1, troponin <0.01.",
    "Medications: metformin 1000 mg PO BID, lisinopril 10 mg daily, atorvastatin 40 mg QHS.",
    "Continue Eliquis 5 mg BID; hold Lipitor while LFTs are rechecked.",
    "Tylenol 650 mg q6h PRN pain, max 3 g per day.",
    "Past Medical History: Type 2 Diabetes Mellitus, Hypertension, Hyperlipidemia, CKD stage 3.",
    "Known Parkinson's disease, on carbidopa-levodopa 25/100 TID.",
    "History of Crohn's disease, last flare in spring, on adalimumab.",
    "Hodgkin lymphoma in remission since chemotherapy.",
    "Right-sided Bell's palsy, improving.",
    "Screened for Cushing syndrome and Graves disease; Hashimoto thyroiditis on levothyroxine.",
    "Family History: Mother: Breast cancer at 52. Father: MI at 60.",
    "Glasgow Coma Scale 14 on arrival, NYHA Class II, Wells score 2.",
    "CHA2DS2-VASc 3; start anticoagulation.",
    "ECG: normal sinus rhythm at 72 bpm, no ST changes.",
    "Imaging: CT head without contrast negative for acute bleed.",
    "Assessment and Plan: community-acquired pneumonia, start ceftriaxone 1 g IV daily.",
    "Review of Systems: negative except as noted in HPI.",
    "Physical Exam: lungs clear bilaterally, abdomen soft, non-tender.",
    "Admitted to the Intensive Care Unit from the Emergency Department.",
    "Referred to Cardiology Clinic for stress testing.",
    "Follow up in 2 weeks with repeat BMP.",
    "ICD-10 E11.9, CPT 99213.",
    "Insulin glargine 20 units at bedtime, Humalog sliding scale.",
    "Patient denies fever, chills, nausea or vomiting.",
    "Patient Education: discussed diet, exercise and medication adherence.",
    "Guillain-Barré syndrome ruled out; Down syndrome noted in the problem list.",
    "Alzheimer's dementia, moderate; MMSE 18/30.",
    "Takes St. John's wort; advised to stop given interactions.",
    "Weight 82.5 kg, height 175 cm, BMI 26.9.",
    "Pain 6/10, improved to 3/10 after morphine 2 mg IV.",
    "Blood cultures x2 drawn at 07:45 before antibiotics.",
    "COVID-19 PCR negative; influenza A positive.",
    "Discharge Instructions: return to the ED for worsening shortness of breath.",
    "Murphy's sign positive; RUQ ultrasound ordered.",
    "Apgar 8 and 9; Braden score 16.",
    "Stage 2 pressure injury on the sacrum, wound care consulted.",
]

CLINICAL_TERMS = [
    "Type 2 Diabetes Mellitus",
    "Parkinson's disease",
    "Crohn's disease",
    "Hodgkin lymphoma",
    "Bell's palsy",
    "Cushing syndrome",
    "Graves disease",
    "Hashimoto thyroiditis",
    "Alzheimer's dementia",
    "Down syndrome",
    "Guillain-Barré syndrome",
    "Glasgow Coma Scale 14",
    "NYHA Class II",
    "CHA2DS2-VASc 3",
    "BP 142/88",
    "HR 96",
    "SpO2 94% on RA",
    "HbA1c 7.4%",
    "Cr 1.2 mg/dL",
    "Plt 250",
    "metformin 1000 mg PO BID",
    "Eliquis 5 mg BID",
    "Lipitor 40 mg",
    "Humalog sliding scale",
    "ICD-10 E11.9",
    "CPT 99213",
    "St. John's wort",
    "Murphy's sign",
    "Intensive Care Unit",
    "Emergency Department",
    "Cardiology Clinic",
    "Mother: Breast cancer",
    "Father: MI at 60",
    "Patient Education",
    "carbidopa-levodopa 25/100 TID",
    "MMSE 18/30",
    "Pain 6/10",
    "Stage 2 pressure injury",
    "normal sinus rhythm at 72 bpm",
    "ceftriaxone 1 g IV daily",
    "Blood cultures x2 drawn at 07:45",
    "Weight 82.5 kg",
    "COVID-19 PCR negative",
    "Apgar 8 and 9",
    "follow up in 2 weeks",
    "Wells score 2",
    "troponin <0.01",
    "eGFR 58",
    "insulin glargine 20 units",
    "influenza A positive",
]


# --- identifiers --------------------------------------------------------------------------------

_DATE_FORMATS = [
    "%m/%d/%Y",
    "{m}/{d}/%Y",
    "%m/%d/%y",
    "%Y-%m-%d",
    "%d-%b-%Y",
    "%B %d, %Y",
    "%b %d %Y",
    "%d %B %Y",
    "%d.%m.%Y",
    "{d}/{m}/%Y",
    "%b. {d}, %Y",
    "%m-%d-%Y",
]
_DOB_CUES = ["DOB: ", "DOB ", "D.O.B.: ", "Date of birth: ", "date of birth ", "born ", "born on ", "Birth date: ",
             "DOB:", "(DOB {date})", "b. "]  # fmt: skip
_TITLES = ["Mr.", "Mrs.", "Ms.", "Dr.", "Mr", "Mrs", "Ms", "Dr", "Prof.", "Miss", "Mx."]
_CREDENTIALS = ["MD", "RN", "NP", "PA-C", "DO", "LPN", "PharmD"]


def _digits_groups(value: str, minimum: int = 4) -> tuple[str, ...]:
    groups = tuple(g for g in re.findall(r"\d+", value) if len(g) >= minimum)
    return groups or (re.sub(r"\D", "", value),)


def _name_parts(*names: str) -> tuple[str, ...]:
    return tuple(p for n in names for p in re.split(r"[\s,]+", n) if len(p.strip(".")) >= 2)


class _Maker:
    def __init__(self, rnd: random.Random) -> None:
        self.rnd = rnd
        self.fakers = {loc: Faker(loc) for loc in ("en_US", "en_GB", "es_MX", "it_IT", "de_DE", "en_IN", "fr_FR")}
        for i, f in enumerate(self.fakers.values()):
            f.seed_instance(SEED + i)
        self.us = self.fakers["en_US"]

    def person(self) -> tuple[str, str]:
        f = self.fakers[self.rnd.choice(list(self.fakers))] if self.rnd.random() < 0.4 else self.us
        first = f.first_name()
        last = f.last_name()
        # some locales give compound surnames ("García Pérez", "von Müller"): keep the capitalised words
        last = " ".join(w for w in last.split() if w[:1].isupper()) or last.capitalize()
        return first, last

    # each returns (text to plant, Planted)

    def name_titled(self) -> tuple[str, Planted]:
        first, last = self.person()
        title = self.rnd.choice(_TITLES)
        form = self.rnd.randrange(4)
        if form == 0:
            text, parts = f"{title} {last}", (last,)
        elif form == 1:
            text, parts = f"{title} {first} {last}", (first, last)
        elif form == 2:
            text, parts = f"{title} {first[0]}. {last}", (last,)
        else:
            text, parts = f"{title} {last}'s", (last,)
        return text, Planted("name_titled", text, _name_parts(*parts))

    def name_untitled(self) -> tuple[str, Planted]:
        first, last = self.person()
        r = self.rnd
        templates: list[Callable[[], tuple[str, tuple[str, ...]]]] = [
            lambda: (f"Patient: {first} {last}", (first, last)),
            lambda: (f"Patient name: {last.upper()}, {first.upper()}", (last.upper(), first.upper())),
            lambda: (f"Name: {last}, {first}", (first, last)),
            lambda: (f"Pt name: {first} {last}", (first, last)),
            lambda: (f"{first} {last} is a {r.randint(18, 95)}-year-old", (first, last)),
            lambda: (f"{first} {last}, {r.randint(18, 95)}, presents with", (first, last)),
            lambda: (f"Spoke with daughter {first} {last} by phone", (first, last)),
            lambda: (f"his wife, {first}, was present", (first,)),
            lambda: (f"Emergency contact: {first} {last} (son)", (first, last)),
            lambda: (f"Electronically signed by {first} {last}, {r.choice(_CREDENTIALS)}", (first, last)),
            lambda: (f"{first} {last}, {r.choice(_CREDENTIALS)}", (first, last)),
            lambda: (f"Referred by {first} {last}", (first, last)),
            lambda: (f"cc: {first} {last}", (first, last)),
            lambda: (f"accompanied by her husband {first} {last}", (first, last)),
            lambda: (f"Discussed with {first} {last} at bedside", (first, last)),
            lambda: (f"PCP: {first} {last}", (first, last)),
            lambda: (f"Seen by {first} {last}", (first, last)),
            lambda: (f"Interpreter: {first} {last}", (first, last)),
            lambda: (f"{first} {last} was seen in follow-up", (first, last)),
            lambda: (f"Patient {first} {last} reports", (first, last)),
        ]
        text, parts = r.choice(templates)()
        return text, Planted("name_untitled", text, _name_parts(*parts))

    def _mrn_value(self) -> str:
        r = self.rnd
        form = r.randrange(5)
        if form == 0:
            return f"{r.randrange(10**7, 10**8):08d}"
        if form == 1:
            return str(r.randrange(10**6, 10**7))
        if form == 2:
            return r.choice("ABHMKE") + f"{r.randrange(10**6, 10**9)}"
        if form == 3:
            return f"{r.randrange(10**9, 10**10)}"
        return f"{r.choice(['MR', 'HN', 'AC'])}{r.randrange(10**5, 10**8):07d}"

    def mrn_labelled(self) -> tuple[str, Planted]:
        r = self.rnd
        value = (
            self._mrn_value()
            if r.random() < 0.8
            else f"{r.randrange(100, 999)}-{r.randrange(100, 999)}-{r.randrange(10, 99)}"
        )
        label = r.choice(["MRN: ", "MRN ", "MRN#", "MRN #", "Medical record number: ", "Med Rec #: ",
                          "Hospital no. ", "Acct: ", "MR#: ", "Patient ID: ", "Chart #"])  # fmt: skip
        text = label + value
        return text, Planted("mrn_labelled", text, (value,))

    def mrn_unlabelled(self) -> tuple[str, Planted]:
        r = self.rnd
        value = self._mrn_value()
        form = r.randrange(4)
        if form == 0:
            first, last = self.person()
            text = f"{last}, {first} ({value})"
            return text, Planted("mrn_unlabelled", text, (value,))
        text = [f"#{value}", f"ID {value}", f"record {value}", f"({value})"][form]
        if form == 1:
            text = f"ref. {value}"
        return text, Planted("mrn_unlabelled", text, (value,))

    def dob(self) -> tuple[str, Planted]:
        r = self.rnd
        date = self.us.date_of_birth(minimum_age=0, maximum_age=100)
        fmt = r.choice(_DATE_FORMATS).replace("{m}", str(date.month)).replace("{d}", str(date.day))
        value = date.strftime(fmt)
        cue = r.choice(_DOB_CUES)
        text = cue.replace("{date}", value) if "{date}" in cue else cue + value
        return text, Planted("dob", text, (value,))

    def phone(self) -> tuple[str, Planted]:
        r = self.rnd
        number = self.us.phone_number()
        if r.random() < 0.2:
            d = re.sub(r"\D", "", self.us.msisdn())[-10:]
            number = r.choice(
                [f"({d[:3]}) {d[3:6]}-{d[6:]}", f"{d[:3]}.{d[3:6]}.{d[6:]}", f"+1 {d[:3]} {d[3:6]} {d[6:]}"]
            )
        label = r.choice(["Phone: ", "cell ", "call back at ", "Tel: ", "home phone ", "reachable at ", "", "Ph "])
        text = label + number
        return text, Planted("phone", text, _digits_groups(number))

    def email(self) -> tuple[str, Planted]:
        r = self.rnd
        f = self.fakers[r.choice(list(self.fakers))]
        value = r.choice([f.email(), f.free_email(), f.company_email(), f.ascii_safe_email()])
        if r.random() < 0.2:
            first, last = self.person()
            value = f"{first}.{last}@{f.domain_name()}".replace(" ", "")
        text = r.choice(["email ", "Email: ", "e-mail: ", "contact at ", "<", ""]) + value
        if text.startswith("<"):
            text += ">"
        return text, Planted("email", text, (value.split("@")[0], value))

    def address(self) -> tuple[str, Planted]:
        r = self.rnd
        street = self.us.street_address()
        m = re.match(r"(\d+) (.+?)(?: (?:Apt\.|Suite) \d+)?$", street)
        assert m, street
        number, name = m.group(1), m.group(2)
        if r.random() < 0.5:
            street += f", {self.us.city()}, {self.us.state_abbr()} {self.us.zipcode()}"
        if r.random() < 0.1:
            box = str(r.randrange(10, 99999))
            text = f"P.O. Box {box}, {self.us.city()}, {self.us.state_abbr()} {self.us.zipcode()}"
            return "Mailing address: " + text, Planted("address", text, (f"Box {box}",))
        text = r.choice(["lives at ", "Address: ", "home address ", "resides at ", ""]) + street
        return text, Planted("address", text, (f"{number} {name.split()[0]}", name))

    def ssn(self) -> tuple[str, Planted]:
        r = self.rnd
        raw = self.us.ssn()
        digits = raw.replace("-", "")
        value = r.choice([raw, raw, f"{digits[:3]} {digits[3:5]} {digits[5:]}", digits])
        label = r.choice(["SSN: ", "SSN ", "SS#: ", "social security number ", "Social Security No. ", ""])
        if value == digits and not label:
            label = "SSN "
        text = label + value
        return text, Planted("ssn", text, _digits_groups(value))

    def card(self) -> tuple[str, Planted]:
        r = self.rnd
        kind = r.choice(["visa16", "visa13", "mastercard", "amex", "discover", "diners", "jcb16", "visa19", "maestro"])
        digits = self.us.credit_card_number(card_type=kind)
        sep = r.choice([" ", "-", ""])
        if sep and len(digits) == 15:
            value = f"{digits[:4]}{sep}{digits[4:10]}{sep}{digits[10:]}"
        elif sep and len(digits) == 14:
            value = f"{digits[:4]}{sep}{digits[4:10]}{sep}{digits[10:]}"
        elif sep:
            value = sep.join(digits[i : i + 4] for i in range(0, len(digits), 4))
        else:
            value = digits
        label = r.choice(["card ", "Visa ", "CC#: ", "paid with ", "credit card number ", "card on file: ", ""])
        text = label + value
        return text, Planted("card", text, _digits_groups(value))


_FRAMES = [
    "{0} was seen today. {c1} {1}. {c2}",
    "{c1} {0}. {c2} Contact {1}.",
    "{0}\n{c1}\n{1}\n{c2}",
    "{c1} Details on file: {0}; {1}. {c2}",
    "{c1} {c2} Identifiers: {0}, {1}.",
]


def generate(count: int = 400, seed: int = SEED) -> list[Note]:
    """``count`` notes, the same ones for the same seed; every kind planted about equally often."""
    rnd = random.Random(seed)
    maker = _Maker(rnd)
    notes = []
    for i in range(count):
        kinds = [KINDS[(i + k) % len(KINDS)] for k in range(0, len(KINDS), 2)]  # five kinds a note, rotating
        rnd.shuffle(kinds)
        plants = [getattr(maker, k)() for k in kinds]
        sentences = rnd.sample(CLINICAL_SENTENCES, 4)
        parts = [sentences[0]]
        for j, (text, _) in enumerate(plants):
            frame = rnd.choice(_FRAMES)
            partner = plants[(j + 1) % len(plants)][0] if j % 2 == 0 else sentences[(j + 1) % 4]
            parts.append(
                frame.format(
                    text, partner if j % 2 == 0 else "see chart", c1=sentences[j % 4], c2=sentences[(j + 2) % 4]
                )
            )
        notes.append(Note("\n".join(parts), [p for _, p in plants]))
    return notes


def leaked(planted: Planted, redacted: str) -> list[str]:
    """The identifying parts of ``planted`` still in ``redacted`` (empty: caught)."""
    out = []
    for part in planted.leaks:
        if re.search(r"(?<![\w])" + re.escape(part) + r"(?![\w])", redacted):
            out.append(part)
    return out


@dataclass
class Score:
    kind: str
    planted: int = 0
    caught: int = 0
    misses: list[tuple[str, list[str]]] = field(default_factory=list)

    @property
    def recall(self) -> float:
        return self.caught / self.planted if self.planted else 1.0


def score(redact: Callable[[str], str], notes: list[Note]) -> dict[str, Score]:
    scores = {k: Score(k) for k in KINDS}
    prose = sorted({redact(s) for s in CLINICAL_SENTENCES}, key=len, reverse=True)
    for note in notes:
        out = redact(note.text)
        for sentence in prose:  # a name that is also a word of the prose ("St. John's wort") is no leak
            out = out.replace(sentence, " ")
        for p in note.planted:
            s = scores[p.kind]
            s.planted += 1
            parts = leaked(p, out)
            if parts:
                s.misses.append((p.value, parts))
            else:
                s.caught += 1
    return scores


def clinical_false_positives(redact: Callable[[str], str]) -> tuple[list[str], list[str]]:
    """The clinical terms and sentences that redaction altered (each should come out unchanged)."""
    return [t for t in CLINICAL_TERMS if redact(t) != t], [s for s in CLINICAL_SENTENCES if redact(s) != s]
