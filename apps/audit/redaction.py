"""PHI redaction for log lines and audit details: regular expressions, cues and checksums.

What it finds (the kinds of tests/audit/phi_corpus.py, recall per kind by
``python -m tests.audit.phi_report``): emails; SSNs; card numbers (13-19 digits, grouped or not,
Luhn-checked); phone numbers (North American, with or without country code, parentheses and an
extension); MRNs after a label (``MRN``, ``Medical record #``, ``Hospital no.``, ``Acct``…) and,
without one, identifiers of 7-12 digits or a letter prefix and 6+ digits; dates of birth after a
cue (``DOB``, ``born``, ``date of birth``) in any common format, and any other date written with
a year in slash or month-name form; street addresses (a house number, capitalised words and one of
the USPS street suffixes, a unit, a city/state/ZIP) and PO boxes; names after a title (``Dr.``,
``Mrs``), after a label or a relation (``Patient:``, ``Emergency contact:``, ``daughter``,
``spoke with``, ``signed by``), before a credential (``, RN``), and sentence-initial names
followed by how notes go on (``John Smith is a 67-year-old``).

The trade-off: no model and no name dictionary, so nothing to download and ~tens of µs a line,
but a name in free text with none of those cues (``met John at the door``) is not found. Where
a cue is ambiguous the rule is greedy (a false positive costs a word in a log line, a false
negative leaks PHI), except against clinical words: a capitalised word from ``_NOT_NAMES``
(headings, diseases, eponyms, drugs, months) ends a name, so ``Mother: Breast cancer`` or
``Glasgow Coma Scale`` stay as they are. ISO dates (``2026-12-02``) are kept unless a birth cue
precedes them: they are the machine timestamps of log lines.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

# --- building blocks ----------------------------------------------------------------------------

_UP = "A-ZÀ-ÖØ-Þ"
_LOW = "a-zß-öø-ÿ"
# A capitalised name word: "Smith", "O'Brien", "McDonald", "Smith-Jones", "José"; or all capitals
# ("SMITH", as in "Patient: SMITH, JOHN").
_MIXED = rf"[{_UP}][{_UP}{_LOW}'’-]*[{_LOW}]"
_CAPS = rf"[{_UP}][{_UP}'’-]*[{_UP}]"
_WORD = rf"(?:{_MIXED}|{_CAPS})"
_INITIAL = rf"[{_UP}]\."
# One to four words of a name, "Last, First M." included; capitals only after a title or label.
_PARTICLE = r"(?:(?:de la|de los|del|de|da|di|do|dos|das|du|van der|van den|van|von der|von|der|le|la|bin|ibn|al|el|ter|ten|y)\s)"
_NAMESEQ = rf"(?:{_INITIAL}\s?)?{_WORD}(?:,?\s{{1,2}}{_PARTICLE}?(?:{_INITIAL}|{_WORD})){{0,3}}"
_NAMESEQ_MIXED = rf"{_MIXED}(?:,?\s{{1,2}}{_PARTICLE}?(?:{_INITIAL}|{_MIXED})){{0,3}}"

_MONTH = r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sept?(?:ember)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)"
_DATE_NUMERIC = r"(?:\d{1,2}/\d{1,2}/(?:\d{4}|\d{2})|\d{1,2}-\d{1,2}-(?:\d{4}|\d{2})|\d{1,2}\.\d{1,2}\.\d{4})(?!\d)"
_DATE_ISO = r"\d{4}[/.-]\d{1,2}[/.-]\d{1,2}(?!\d)"
_DATE_WORDS = (
    rf"(?:\d{{1,2}}(?:st|nd|rd|th)?[\s-]+{_MONTH}\.?,?[\s-]+\d{{2,4}}"
    rf"|{_MONTH}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}})(?!\d)"
)
_ANY_DATE = rf"(?:{_DATE_ISO}|{_DATE_NUMERIC}|{_DATE_WORDS})"

# USPS Publication 28, appendix C1 (primary suffixes and the usual abbreviations).
_STREET_SUFFIXES = """
Alley Aly Annex Arcade Avenue Ave Av Bayou Beach Bend Bluff Bluffs Bottom Boulevard Blvd Branch
Bridge Brook Brooks Burg Burgs Bypass Camp Canyon Cape Causeway Center Centers Circle Cir Circles
Cliff Cliffs Club Common Commons Corner Corners Course Court Ct Courts Cove Coves Creek Crescent
Crest Crossing Crossroad Curve Dale Dam Divide Drive Dr Drives Estate Estates Expressway Expy
Extension Extensions Fall Falls Ferry Field Fields Flat Flats Ford Fords Forest Forge Forges Fork
Forks Fort Freeway Fwy Garden Gardens Gateway Glen Glens Green Greens Grove Groves Harbor Harbors
Haven Heights Hts Highway Hwy Hill Hills Hollow Inlet Island Islands Isle Junction Junctions Key
Keys Knoll Knolls Lake Lakes Land Landing Lane Ln Light Lights Loaf Lock Locks Lodge Loop Mall
Manor Manors Meadow Meadows Mews Mill Mills Mission Motorway Mount Mountain Mountains Neck Orchard
Oval Overpass Park Parks Parkway Pkwy Parkways Pass Passage Path Pike Pine Pines Place Pl Plain
Plains Plaza Point Points Port Ports Prairie Radial Ramp Ranch Rapid Rapids Rest Ridge Ridges
River Road Rd Roads Route Row Rue Run Shoal Shoals Shore Shores Skyway Spring Springs Spur Spurs
Square Sq Squares Station Stravenue Stream Street St Streets Summit Terrace Ter Throughway Trace
Track Trafficway Trail Trl Tunnel Turnpike Underpass Union Unions Valley Valleys Via Viaduct View
Views Village Villages Ville Vista Walk Walks Wall Way Ways Well Wells
""".split()
_SUFFIX = "(?:" + "|".join(sorted(_STREET_SUFFIXES, key=len, reverse=True)) + r")\b\.?"
_UNIT = r"(?:,?\s*(?:Apt\.?|Apartment|Suite|Ste\.?|Unit|Fl\.?|Floor|Room|Rm\.?|Bldg\.?|#)\s*#?\s*[A-Za-z0-9-]{1,6}\b)"
_CITY_STATE_ZIP = rf"(?:,?\s+[{_UP}][{_LOW}]+(?:\s[{_UP}][{_LOW}]+){{0,2}},\s*[A-Z]{{2}}\.?\s+\d{{5}}(?:-\d{{4}})?)"

_TITLES = (
    r"(?:Mr|Mrs|Ms|Mx|Miss|Mister|Madam|Mme|Dr|Doctor|Prof|Professor|Sr|Sra|Srta|Rev|Fr|Sister|Nurse|Capt|Sgt|Lt"
    r"|Hon|Judge)"
)
_CREDENTIALS = r"(?:MD|M\.D\.|DO|RN|BSN|NP|FNP|APRN|DNP|PA-C|PA|LPN|CNA|PharmD|PhD|MSW|LCSW|CRNA|RT|PT|OT|MBBS)"
# Cues after which a name follows with no colon; and labels that need one ("Name:", "PCP:").
_RELATIONS = (
    r"(?:wife|husband|spouse|partner|fianc[ée]e?|daughter|son|mother|father|mom|dad|sister|brother|"
    r"grand(?:mother|father|daughter|son)|aunt|uncle|niece|nephew|cousin|friend|neighbou?r|roommate|"
    r"interpreter|caregiver|guardian|contact|girlfriend|boyfriend|sibling|stepson|stepdaughter|"
    r"spoke (?:with|to)|talked (?:with|to)|discussed (?:with|the plan with)|met with|called|"
    r"referred by|seen by|seen with|accompanied by|signed by|signed|cosigned by|co-signed by|dictated by|"
    r"reviewed by|transcribed by|attested by|witnessed by|c/o|attn|patient|pt)"
)
_LABELS = (
    r"(?:name|full name|patient name|pt name|patient|pt|contact|emergency contact|next of kin|nok|guardian|"
    r"caregiver|poa|health care proxy|proxy|attending|attending physician|resident|fellow|nurse|rn|"
    r"physician|provider|pcp|primary care|surgeon|consultant|referring(?: physician| provider)?|"
    r"author|signed|signature|witness|interpreter|spouse|parent|mother|father|informant|requested by|"
    r"ordered by|from|to|cc)"
)

# Capitalised words that are not names (and end one: "Mother: Breast cancer", "Glasgow Coma
# Scale", "Patient Education"). Headings, pronouns, the words that start sentences, diseases,
# anatomy, drugs and units a note writes with a capital, months and days.
_NOT_NAMES = frozenset(
    """
    A An The This That These Those He She They We I It His Her Their Our My Your Its Him Them
    Patient Pt Patients Name Names Contact Daughter Son Wife Husband Mother Father Family Friend
    Mr Mrs Ms Dr Prof Today Yesterday Tomorrow Tonight Morning Afternoon Evening Night Now Then
    Also And Or But Not No Yes None Denies Reports States Has Had Was Is Are Were Will Would Should
    Please Per Plan Plans Assessment History Present Illness Chief Complaint Review Systems Physical
    Exam Examination Vitals Vital Signs Labs Lab Results Imaging Medications Medication Allergies
    Allergy Social Surgical Medical Past Diagnosis Diagnoses Impression Problem Problems List
    Disposition Discharge Admission Admitted Follow Followup Up Instructions Education Counseling
    Note Notes Progress Summary Subjective Objective Hospital Course Consult Consultation Procedure
    Procedures Findings Recommendations Recommendation Orders Order Signed Electronically Attending
    Resident Nurse Nursing Provider Physician Surgeon Team Service Department Unit Clinic Center
    Emergency Intensive Care Primary Urgent Cardiology Oncology Neurology Radiology Pathology
    Pharmacy Surgery Medicine Pediatrics Obstetrics Gynecology Psychiatry Dermatology Orthopedics
    Nephrology Pulmonology Gastroenterology Endocrinology Urology Hematology Rheumatology ICU ED ER
    OR PACU Type Class Stage Grade Level Scale Score Coma Glasgow NYHA Wells Apgar Braden Morse
    Acute Chronic Severe Mild Moderate Stable Unstable Normal Abnormal Negative Positive Left Right
    Bilateral Upper Lower Anterior Posterior Breast Chest Heart Lung Lungs Abdomen Head Neck Back
    Skin Brain Kidney Liver Blood Pressure Rate Heart Pulse Temp Temperature Oxygen Weight Height
    Diabetes Mellitus Hypertension Hyperlipidemia Asthma Cancer Carcinoma Lymphoma Leukemia Disease
    Syndrome Disorder Failure Infection Pneumonia Sepsis Stroke Fracture Injury Pain Fever Cough
    Insulin Metformin Lisinopril Atorvastatin Lipitor Eliquis Xarelto Coumadin Warfarin Tylenol
    Advil Motrin Aspirin Humalog Lantus Ozempic Zoloft Prozac Norco Percocet Keflex Augmentin
    Parkinson Parkinson's Alzheimer Alzheimer's Crohn Crohn's Hodgkin Hodgkin's Cushing Cushing's
    Graves' Hashimoto Hashimoto's Addison Addison's Bell's Down Guillain Barré Barre
    Huntington's Raynaud Raynaud's Tourette Tourette's Sjogren Sjögren's Kawasaki
    Marfan Wilson's Lyme Epstein Babinski Murphy's McBurney Kernig Brudzinski
    Homan Homans Trendelenburg Valsalva Heimlich Ganz Holter Doppler Gram Apley
    January February March April May June July August September October November December
    Monday Tuesday Wednesday Thursday Friday Saturday Sunday Jan Feb Mar Apr Jun Jul Aug Sep Sept
    Oct Nov Dec Mon Tue Wed Thu Fri Sat Sun AM PM BID TID QID PRN PO IV IM SC HS QHS
    COVID COVID-19 HIV AIDS MRI CT ECG EKG CBC BMP CMP MRSA COPD CHF CAD CKD GERD DVT PE UTI
    English Spanish French Chinese Arabic Russian Vietnamese Korean Portuguese Haitian Creole
    Medicare Medicaid Tricare Aetna Cigna Humana Kaiser Blue Cross Shield Unknown Other Self
    Precautions Isolation Seen Spoke Discussed Referred Accompanied Called Met Hello Hi Dear Thanks Thank Regards Sincerely Best Ok OK
    MD DO RN NP PA LPN CNA PharmD PhD MSW LCSW BSN FNP APRN DNP CRNA MBBS
    """.split()
)

# --- replacement helpers ------------------------------------------------------------------------


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    if 12 <= len(digits) <= 19 and (_luhn_ok(digits) or re.fullmatch(r"\d+", match.group(0))):
        return "[CARD]"
    return match.group(0)


_NAME_TOKEN = re.compile(rf"{_INITIAL}|{_WORD}")


# Words of _NOT_NAMES that are also first names or surnames ("April", "May", "French", "Cross",
# "Morse", "Raynaud"): they end a name only where no other word of it is a name, and never right
# after a title ("Ms. May", "Dr. French").
_WEAK = frozenset(
    """
    January February March April May June July August Monday Sunday English French Spanish Cross Morse
    Raynaud Raynaud's Wilson's Parkinson Crohn Hodgkin Cushing Addison Hashimoto Alzheimer Kawasaki Marfan
    Huntington's Epstein Babinski Kernig Homan Homans Valsalva Holter Doppler Gram Apley Tourette Sjogren
    Guillain Trendelenburg Heimlich Ganz Lyme Blue Self Best Golden Young Ward Page Hall Rose Hope
    """.split()
)


def _name_span(text: str, titled: bool = False) -> tuple[int, int] | None:
    """The name in ``text`` (a candidate after a cue): from its first word that may be a name to
    the word before the first that cannot; None when it holds no name."""
    end = 0
    start = None
    real = titled
    for i, tok in enumerate(_NAME_TOKEN.finditer(text)):
        word = tok.group(0).rstrip(".")
        key = word if word in _NOT_NAMES or word in _WEAK else word.capitalize()
        weak = key in _WEAK
        if key in _NOT_NAMES and not weak and not (titled and i == 0):
            if start is None:
                continue  # "Electronically Signed Jane Doe, MD": the name starts after them
            break
        if start is None:
            start = tok.start()
        real = real or not weak
        end = tok.end()
    if start is None or not real:
        return None
    return start, end


# --- the rules, in order ------------------------------------------------------------------------


class _Text:
    """What the gates of the rules ask of a text, each worked out once."""

    def __init__(self, text: str) -> None:
        self.lower: str = text.lower()
        self.digits4: bool = _DIGITS4.search(text) is not None
        self.digit: bool = self.digits4 or any(c.isdigit() for c in text)


_DIGITS4 = re.compile(r"\d{4}")
_RELATION_WORDS = tuple(w for w in re.findall(r"[a-z]+", _RELATIONS) if len(w) > 2 or w in ("pt", "cc", "son"))
_MRN_WORDS = ("mr", "rec", "hospital", "patient", "pt", "chart", "acct", "account", "unit", "encounter")
_TITLE_GATE = re.compile(rf"\b{_TITLES}\b")
_CREDENTIAL_GATE = re.compile(rf"\b{_CREDENTIALS}\b")
_Gate = Callable[[_Text, str], bool]


class _Rule:
    """A pattern, what replaces it, and a cheap test that says when it cannot match (most log
    lines hold no digit group, no "@", no title: their patterns are not run at all)."""

    def __init__(
        self,
        pattern: re.Pattern[str],
        replace: str | Callable[[re.Match[str]], str] | None,
        gate: _Gate,
        titled: bool = False,
    ) -> None:
        self.pattern, self.replace, self.gate, self.titled = pattern, replace, gate, titled

    def apply(self, text: str) -> str:
        if self.replace is None:  # group 1 is a candidate name
            return _names(self.pattern, text, self.titled)
        return self.pattern.sub(self.replace, text)


def _names(pattern: re.Pattern[str], text: str, titled: bool = False) -> str:
    """Replace the name in group 1 of each match. A match whose candidate holds no name ("Contact
    Seen by Jane Roe": "Seen" is a cue, not a name) is searched again from its next character, so
    a cue inside it is not lost to the match that took it."""
    out: list[str] = []
    pos = done = 0
    while (match := pattern.search(text, pos)) is not None:
        span = _name_span(match.group(1), titled)
        if span is None:
            pos = match.start() + 1
            continue
        a, b = match.start(1) + span[0], match.start(1) + span[1]
        out += [text[done:a], "[NAME]"]
        done = pos = max(b, match.start() + 1)
    return "".join(out) + text[done:] if out else text


def _keep_label(placeholder: str) -> Callable[[re.Match[str]], str]:
    """The label and what separates it (group 1) stay; the value becomes ``placeholder``."""
    return lambda m: m.group(0)[: m.end(1) - m.start(0)] + placeholder


def _any(*words: str) -> _Gate:
    return lambda t, text: any(w in t.lower for w in words)


_RULES: list[_Rule] = [
    _Rule(re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+"), "[EMAIL]", lambda t, text: "@" in text),
    _Rule(
        re.compile(
            r"(?i:\b(?:SSN|SS#|SS No\.?|social security(?: number| no\.?| #)?)(\s*[:#]?\s*))\d{3}[- ]?\d{2}[- ]?\d{4}\b"
        ),
        _keep_label("[SSN]"),
        lambda t, text: t.digits4 and ("ss" in t.lower or "social" in t.lower),
    ),
    _Rule(re.compile(r"(?<![\w-])\d{3}([- ])\d{2}\1\d{4}(?![\w-])"), "[SSN]", lambda t, text: t.digits4),
    # cards: 12-19 digits (Maestro has 12) in groups of 4 (Amex 4-6-5, Diners 4-6-4) or none, Luhn-checked when grouped
    _Rule(
        re.compile(
            r"(?<![\w-])\d{4}([ -])(?:\d{4}(?:\1\d{1,4}){1,3}|\d{6}\1\d{4,5})(?![\w-])|(?<![\w-])\d{12,19}(?![\w-])"
        ),
        _card,
        lambda t, text: t.digits4,
    ),
    _Rule(
        re.compile(
            r"(?<![\w-])(?:(?:\+?1|001)[\s.-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}"
            r"(?:\s?(?:x|ext\.?|extension)\s?\d{1,6})?(?![\w-])"
            r"|(?<![\w-])(?:\+?1[\s.-]?)?\d{10}(?:\s?(?:x|ext\.?)\s?\d{1,6})?(?![\w-])"
        ),
        "[PHONE]",
        lambda t, text: t.digits4,
    ),
    _Rule(
        re.compile(
            r"(?i:\b(?:MRN|MR#|MR No\.?|medical record(?: number| no\.?| #)?|med(?:ical)? rec(?:ord)?\.?(?: no\.?| #)?"
            r"|hospital (?:number|no\.?|#|id)|patient id|pt id|patient #|chart(?: number| no\.?| #)?"
            r"|acct(?: no\.?| #)?|account(?: number| no\.?| #)?|unit (?:number|no\.?)|encounter(?: id| #)?)"
            r"(\s*[:#=]?\s*(?:no\.?\s*|#\s*)?))[A-Za-z]{0,3}[-\s]?\d[\d-]{3,14}\b"
        ),
        _keep_label("[MRN]"),
        lambda t, text: t.digit and any(w in t.lower for w in _MRN_WORDS),
    ),
    _Rule(
        re.compile(
            r"(?i:\b(?:DOB|D\.O\.B\.?|date of birth|birth ?date|birthday|born(?: on)?|b\.)(?!\w)"
            rf"(\s*[:#-]?\s*(?:on\s+)?)){_ANY_DATE}"
        ),
        _keep_label("[DOB]"),
        lambda t, text: t.digit and any(w in t.lower for w in ("dob", "d.o.b", "birth", "born", "b.")),
    ),
    _Rule(re.compile(rf"(?<![\w/.-])(?:{_DATE_NUMERIC}|{_DATE_WORDS})"), "[DATE]", lambda t, text: t.digit),
    _Rule(
        re.compile(
            rf"\b\d{{1,6}}[A-Z]?\s+(?:[NSEW]\.?\s+)?(?:(?:{_WORD}|\d{{1,3}}(?:st|nd|rd|th))\s+){{1,4}}{_SUFFIX}"
            rf"{_UNIT}?{_CITY_STATE_ZIP}?"
            rf"|(?i:\bP\.?\s?O\.?\s+Box)\s+\d{{1,6}}{_CITY_STATE_ZIP}?"
        ),
        "[ADDRESS]",
        lambda t, text: t.digit,
    ),
    _Rule(
        re.compile(rf"\b[{_UP}][{_LOW}]+(?:\s[{_UP}][{_LOW}]+){{0,2}},\s*[A-Z]{{2}}\s+\d{{5}}(?:-\d{{4}})?\b"),
        "[ADDRESS]",
        lambda t, text: t.digits4,
    ),
    # names: after a title; after a label with a colon; after a relation or verb cue; before a
    # credential; at a sentence's start when the sentence goes on as notes do about a person
    _Rule(
        re.compile(rf"\b{_TITLES}\.?\s+({_NAMESEQ})"),
        None,
        lambda t, text: _TITLE_GATE.search(text) is not None,
        titled=True,
    ),
    _Rule(re.compile(rf"(?i:\b{_LABELS})\s*:\s*({_NAMESEQ_MIXED})"), None, lambda t, text: ":" in text),
    _Rule(
        re.compile(rf"(?i:\b(?:name|full name|patient name|pt name|patient|pt))\s*:\s*({_CAPS}(?:,?\s+{_CAPS})+)"),
        None,
        lambda t, text: ":" in text and ("name" in t.lower or "pt" in t.lower or "patient" in t.lower),
    ),
    _Rule(re.compile(rf"(?i:\b{_RELATIONS}\b),?\s+({_NAMESEQ_MIXED})"), None, _any(*_RELATION_WORDS)),
    # "Roe, Jane (0048291)", "Roe, Jane A. (MRN ...)": a list of patients
    _Rule(
        re.compile(rf"({_MIXED},\s+{_MIXED}(?:\s+{_INITIAL})?)(?=\s*\(\s*(?:#|MRN|\[|[A-Z]{{0,3}}\d))"),
        None,
        lambda t, text: "(" in text and "," in text,
    ),
    _Rule(
        re.compile(rf"({_NAMESEQ_MIXED})(?=,?\s+{_CREDENTIALS}\b)"),
        None,
        lambda t, text: _CREDENTIAL_GATE.search(text) is not None,
    ),
    _Rule(
        re.compile(
            rf"(?:^|(?<=[.!?;:,]\s)|(?<=\n))({_MIXED}(?:\s+(?:{_INITIAL}\s+)?{_MIXED}){{1,2}})"
            r"(?=(?:,\s*(?:a|an|age|aged|\d{1,3})\b)|\s+(?:is|was|has|had|presents|presented|reports|reported|returns"
            r"|returned|arrives|arrived|comes|came|denies|denied|states|stated|called|calls|notes|noted|endorses"
            r"|complains|agrees|agreed|declines|declined|underwent|tolerated|remains|lives|works|\(\d{1,3})\b)",
            re.MULTILINE,
        ),
        None,
        lambda t, text: True,
    ),
    # identifiers with no label: 7-12 digits alone, or a letter prefix and 6+ digits ("H00482913")
    _Rule(
        re.compile(r"(?<![\w/.:-])(?:#\s?)?(?:[A-Z]{1,3}-?\d{6,12}|\d{7,12})(?![\w/-])"),
        "[ID]",
        lambda t, text: t.digits4,
    ),
]


def redact(text: str) -> str:
    """Return ``text`` with PHI replaced by bracketed placeholders."""
    if len(text) <= _SHORT:
        return _redact_short(text)
    return _redact(text)


def _redact(text: str) -> str:
    facts = _Text(text)
    for rule in _RULES:
        if rule.gate(facts, text):
            text = rule.apply(text)
    return text


# Audit details repeat the same short values (status, model and error codes) on every event: the
# patterns cost ~10 µs per string, a cache hit well under one.
_SHORT = 64
_redact_short = functools.lru_cache(maxsize=4096)(_redact)


def redact_value(value: Any) -> Any:
    """Redact strings inside nested dicts/lists (audit details)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(v) for v in value]
    return value
