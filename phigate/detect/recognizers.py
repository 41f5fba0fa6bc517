"""The HIPAA Safe Harbor recognizer pack: declarative regex rules in Presidio's style.

Each `RuleRecognizer` is a Presidio `EntityRecognizer` for one entity type. A `Rule` is a
pattern, a score and an optional validator (check digit, shape). Context words are part of
the pattern itself (``MRN: <id>``), and the named group ``phi`` marks the span to report, so
the keyword stays readable and the decision does not depend on a lemmatizer being loaded.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from presidio_analyzer import EntityRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

from phigate.detect.lexicon import GIVEN_FILE, SURNAME_FILE, given_names, surnames
from phigate.detect.scan import (Finder, finder, fold, occurs, positions, required_literals, search_from,
                                 start_literals)
from phigate.detect.validators import dea_ok, has_digits, id_ok, is_code_like, long_id_ok, npi_ok, vin_ok

STRONG, CONTEXT, WEAK = 0.9, 0.8, 0.55
NAME = 0.88  # above spaCy's 0.85, so Presidio keeps our span when the NER span runs past it


@dataclass(frozen=True)
class Rule:
    name: str
    regex: str
    score: float
    validate: Callable[[str], bool] | None = None
    flags: int = re.IGNORECASE
    not_after: str | None = None  # a match right after this (e.g. "SNOMED") is a code, not PHI
    compiled: re.Pattern = field(init=False, repr=False, compare=False)
    compiled_not_after: re.Pattern | None = field(init=False, repr=False, compare=False)
    # Read from the regex (scan.py): literals one of which begins every match, else literals one
    # of which occurs in every text the rule matches in; None when the regex shows none.
    starts: Finder | None = field(init=False, repr=False, compare=False)
    needs: Finder | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "compiled", re.compile(self.regex, self.flags))
        object.__setattr__(self, "compiled_not_after",
                           re.compile(rf"(?:{self.not_after})\W{{0,3}}$", re.IGNORECASE) if self.not_after else None)
        starts = finder(start_literals(self.regex, self.flags))
        object.__setattr__(self, "starts", starts)
        object.__setattr__(self, "needs", None if starts else finder(required_literals(self.regex, self.flags)))

    def spans(self, text: str, folded: str | None = None):
        """(start, end) of each accepted match. Tries the pattern only where a start literal
        occurs, or not at all when no required literal does (`folded` is `scan.fold(text)`,
        shared by the rules of one text)."""
        if self.starts is None and self.needs is None:
            return self.spans_by_search(text)
        folded = fold(text) if folded is None else folded
        if self.starts is None:
            if not occurs(text, folded, self.needs):
                return iter(())
            return self.spans_by_search(text)
        found = positions(text, folded, self.starts)
        if not found:
            return iter(())
        return rule_spans(self, text, partial(search_from, self.compiled, text, starts=found))

    def spans_by_search(self, text: str):
        """The same spans from `re.search` at every position: the reference `spans` is tested against."""
        return rule_spans(self, text, partial(self.compiled.search, text))


def rule_spans(rule: Rule, text: str, search: Callable[[int], re.Match | None]):
    """Accepted spans of the matches `search(position)` finds, left to right."""
    group = "phi" if "phi" in rule.compiled.groupindex else 0
    position = 0
    while match := search(position):
        start, end = match.span(group)
        # A rejected match may hide a valid one that starts inside it ("pump serial no. SN-1234").
        position = match.end() if match.end() > match.start() else match.start() + 1
        if start == end:
            continue
        if rule.compiled_not_after and rule.compiled_not_after.search(text, max(0, start - 24), start):
            continue
        if rule.validate is None or rule.validate(text[start:end]):
            yield start, end
        else:
            position = match.start() + 1


class RuleRecognizer(EntityRecognizer):
    """One entity type, many rules; every rule reports its own score."""

    def __init__(self, entity: str, rules: list[Rule], name: str | None = None):
        self.rules = rules
        super().__init__(supported_entities=[entity], name=name or f"Phigate{entity.title().replace('_', '')}")

    def load(self) -> None:
        pass

    def analyze(self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None):
        entity = self.supported_entities[0]
        if entities and entity not in entities:
            return []
        folded = fold(text)
        return [
            RecognizerResult(entity, start, end, rule.score,
                             recognition_metadata={RecognizerResult.RECOGNIZER_NAME_KEY: self.name,
                                                   RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
                                                   RecognizerResult.IS_SCORE_ENHANCED_BY_CONTEXT_KEY: True})
            for rule in self.rules
            for start, end in rule.spans(text, folded)
        ]


# --- building blocks -----------------------------------------------------------------------

# What follows a context keyword before the value: "MRN: ", "member ID # ", "acct no. is ".
_LEAD = r"(?:[\s:#=./\-]|\b(?:number|num|nbr|no|id|is|was|of)\b)*"
# An identifier value: 4-40 characters of letters, digits and inner separators.
_ID = r"(?P<phi>[A-Z0-9](?:[A-Z0-9\-/.]{2,38}[A-Z0-9]))"


def after(keywords: str) -> str:
    """Pattern for an identifier that follows one of the context keywords."""
    return rf"(?<![A-Za-z0-9])(?:{keywords})(?![a-z]){_LEAD}{_ID}(?![A-Za-z0-9])"


_NAME = r"(?:[A-Z]'|Mc|Mac)?[A-Z][a-z]+(?:-[A-Z][a-z]+)?"
_FULL_NAME = rf"{_NAME}(?:\s+(?:[A-Z]\.?\s+)?{_NAME}){{0,2}}"
_MONTH = (r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?"
          r"|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)")
_DAY = r"(?:0?[1-9]|[12]\d|3[01])"
_MM = r"(?:0?[1-9]|1[0-2])"
_STATE_CODES = ("AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV"
                "|NH|NJ|NM|NY|NC|ND|OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY|PR|GU|VI")
_STREET_SUFFIX = (r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Drive|Dr|Lane|Ln|Court|Ct|Way|Place|Pl"
                  r"|Terrace|Ter|Circle|Cir|Parkway|Pkwy|Highway|Hwy|Trail|Trl|Square|Sq|Loop|Pike|Row"
                  r"|Alley|Aly|Plaza|Crossing|Xing|Point|Ridge|Heights|Hts|Expressway|Expy|Freeway|Fwy"
                  r"|Turnpike|Tpke|Route|Rte|Walk|Run|Path|Pass|Park|Bend|Cove|Creek|Crest|Glen|Grove"
                  r"|Hill|Hollow|Island|Junction|Knoll|Lake|Landing|Manor|Meadow|Meadows|Mill|Mills"
                  r"|Orchard|Pines|Port|Prairie|Ranch|Spring|Springs|Station|Summit|Valley|View|Villa"
                  r"|Village|Vista|Wells|Harbor|Haven|Brook|Estates|Falls|Ferry|Field|Fields|Flat|Ford"
                  r"|Forest|Fork|Fort|Gardens|Gateway|Green)")
_UNIT = r"(?:,?\s*(?:Apt|Apartment|Suite|Ste|Unit|Rm|Room|Bldg|Building|Fl|Floor|Lot|#)\.?\s*#?\s*[A-Z0-9-]{1,6})?"
_HOSPITAL_WORD = (r"(?:Hospital|Medical Center|Medical Centre|Health Center|Health System|Healthcare|Health Care"
                  r"|Clinic|Infirmary|Surgery Center|Surgical Center|Urgent Care|Rehabilitation Center"
                  r"|Rehab Center|Nursing Home|Care Center|Hospice|Medical Group|Physicians Group"
                  r"|Family Practice|Pediatrics|Health Partners|Regional|Memorial|General|Children's|Pharmacy"
                  r"|Behavioral Health|Mental Health|Assisted Living|Senior Living|Skilled Nursing|Nursing Center"
                  r"|Nursing Facility|Rehabilitation|Cancer Center|Cancer Institute|Heart Institute|Institute"
                  r"|Dialysis Center|Imaging Center|Radiology|Laboratories|Health)")
NOT_NAME_WORDS = {
    "The", "This", "That", "These", "He", "She", "They", "His", "Her", "Their", "It", "Is", "Was", "Has",
    "Had", "Have", "Denies", "Reports", "States", "Presents", "Presented", "Admitted", "Discharged", "With",
    "And", "Who", "Name", "Patient", "Pt", "Also", "Today", "Will", "Would", "Should", "Please", "Not",
    "No", "Yes", "Currently", "Here", "Seen", "Being", "Given", "Started", "On", "In", "At", "To", "For",
    "From", "Of", "Per", "By", "As", "An", "A", "Unknown", "Tolerated", "Remains", "Complains", "Dr", "Mr",
    "Mrs", "Ms", "Miss", "Doctor", "Nurse", "Prof", "Compare", "Consider", "Start", "Continue", "Use",
}


# Vocabulary codes (SNOMED 44054006, NDC 0002143380) are not identifiers of a person.
_CODE_SYSTEMS = r"snomed(?:\s?ct)?|loinc|cpt|ndc|rxnorm|rxcui|hcpcs|cvx|icd-?(?:9|10)?(?:-cm)?|code|sctid"


# Larger than a state is not an identifier under Safe Harbor.
STATES_AND_COUNTRIES = frozenset(s.lower() for s in (
    "Alabama Alaska Arizona Arkansas California Colorado Connecticut Delaware Florida Georgia Hawaii Idaho "
    "Illinois Indiana Iowa Kansas Kentucky Louisiana Maine Maryland Massachusetts Michigan Minnesota "
    "Mississippi Missouri Montana Nebraska Nevada Ohio Oklahoma Oregon Pennsylvania Tennessee Texas Utah "
    "Vermont Virginia Washington Wisconsin Wyoming US USA America Canada Mexico"
).split()) | {"new hampshire", "new jersey", "new mexico", "new york", "new york state", "north carolina",
              "north dakota", "rhode island", "south carolina", "south dakota", "west virginia", "puerto rico",
              "united states", "the united states", "u.s.", "u.s.a.", "carolina", "dakota", "hampshire",
              "jersey", "york", "rhode", "island", "puerto", "rico"}


def _plausible_name(value: str) -> bool:
    words = value.split()
    return (words[0] not in NOT_NAME_WORDS and value.lower() not in STATES_AND_COUNTRIES
            and not all(w.lower() in STATES_AND_COUNTRIES for w in words))


def _any(*options: str) -> str:
    return "|".join(options)


# --- the pack ------------------------------------------------------------------------------

PACK: dict[str, list[Rule]] = {
    "PERSON": [
        Rule("title", rf"(?<![A-Za-z])(?:Dr|Mr|Mrs|Ms|Mx|Miss|Prof|Doctor|Nurse)\.?\s+(?P<phi>{_FULL_NAME})",
             NAME, _plausible_name, flags=0),
        Rule("clinical-context",
             r"(?<![A-Za-z])(?i:patient(?:'s)?|pt\.?|name[sd]?|son|daughter|wife|husband|mother|father|brother"
             r"|sister|spouse|partner|guardian|caregiver|contact|referred by|attending|pcp|provider|physician"
             r"|surgeon|nurse|rn|np|pa-c|signed by|dictated by|cosigned by|resident|fellow|emergency contact"
             r"|next of kin|nok|poa|mrs?|call back|call|called|calling|notify|notified|ask|asked|tell|told|page|paged"
             r"|transfer|transferred|discharge|discharged|consult|informed|spoke with|spoke to|discussed with|met with|visited by|accompanied by|attn|c/o)"
             rf"[\s:,-]+(?P<phi>{_FULL_NAME})", NAME, _plausible_name, flags=0),
        Rule("before-demographics", rf"(?P<phi>{_FULL_NAME})(?=,?\s+(?:\(\s*)?(?:an?\s+)?(?i:dob|d\.o\.b|age[ds]?\b|mrn|born"
                                    r"|is an?\s+\d|is an?\s+\w+-year|\d{1,3}\s?(?:yo|y/o|y\.o\.|-year|years?\b|[mf]\b)))",
             NAME, _plausible_name, flags=0),
        Rule("about-someone", r"(?<![A-Za-z])(?i:(?:chart|summary|note|notes|record|records|letter|referral|results"
                              r"|labs|visit|plan) (?:for|of|on)|(?:patient|pt\.?) (?:is|was|named))\s+"
                              rf"(?P<phi>{_FULL_NAME})", NAME, _plausible_name, flags=0),
        Rule("surname-first", rf"(?<![A-Za-z])(?i:patient|pt|name)[\s:]+(?P<phi>[A-Z][A-Za-z'-]+,\s*{_NAME})",
             NAME, flags=0),
    ],
    "DATE": [
        Rule("numeric-mdy", rf"(?<![\d/.-]){_MM}[/.-]{_DAY}[/.-](?:19|20)?\d{{2}}(?![\d/-]|\.\d)", STRONG, flags=0),
        Rule("iso", rf"(?<!\d)(?:1[89]|20)\d{{2}}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])"
                    r"(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?(?!\d)", STRONG, flags=0),
        Rule("numeric-dmy", rf"(?<![\d/.-])(?:1[3-9]|2\d|3[01])[/.-]{_MM}[/.-](?:19|20)\d{{2}}(?![\d/-]|\.\d)", STRONG,
             flags=0),
        Rule("ymd-slash", rf"(?<!\d)(?:19|20)\d{{2}}/{_MM}/{_DAY}(?!\d)", STRONG, flags=0),
        Rule("month-day", rf"\b{_MONTH}\.?\s+{_DAY}(?:st|nd|rd|th)?\b(?:,?\s+(?:19|20)\d{{2}}\b)?", STRONG),
        Rule("day-month", rf"\b{_DAY}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH}\b\.?(?:,?\s+(?:19|20)\d{{2}}\b)?", STRONG),
        Rule("month-year", rf"\b{_MONTH}\.?,?\s+(?:of\s+)?(?:19|20)\d{{2}}\b", STRONG),
        Rule("day-mon-year", rf"(?<!\d){_DAY}-{_MONTH}-(?:19|20)?\d{{2}}(?!\d)", STRONG),
        Rule("month-day-in-context",
             rf"\b(?:on|since|from|until|till|dated|dob|d\.o\.b\.?|born|date|seen|admitted|discharged|due)"
             rf"[\s:]+(?P<phi>{_MM}/{_DAY})(?![\d/])", CONTEXT),
        Rule("holiday", r"\b(?:Christmas(?: Eve| Day)?|New Year's(?: Eve| Day)?|Thanksgiving(?: Day)?|Easter(?: Sunday)?"
                        r"|Halloween|Independence Day|Fourth of July|Memorial Day|Labor Day|Valentine's Day"
                        r"|Veterans Day|Mother's Day|Father's Day)(?:,?\s+(?:19|20)\d{2})?\b", CONTEXT, flags=0),
        Rule("compact-dob", r"\b(?:dob|d\.o\.b\.?|birth ?date|date of birth)[\s:#]*(?P<phi>(?:19|20)\d{6}|\d{8})\b",
             CONTEXT),
    ],
    "AGE_OVER_89": [
        Rule("age-words", r"(?<![\d.])(?P<phi>(?:9\d|1[0-2]\d)(?:[\s-]*(?:y/?o|y\.o\.|yrs?|years?|yr)"
                          r"(?:[\s-]*old)?|(?:[\s-]*(?:year|yr)s?[\s-]*old))(?:\s+of\s+age)?)\b", STRONG),
        Rule("age-sex", r"(?<![\d.])(?P<phi>(?:9\d|1[0-2]\d)\s?(?:M|F|yo[MF]))\b", CONTEXT, flags=0),
        Rule("aged", r"\b(?:age[ds]?|aged)[\s:]*(?P<phi>(?:9\d|1[0-2]\d))(?![\d.])", STRONG),
        Rule("of-age", r"(?<![\d.])(?P<phi>(?:9\d|1[0-2]\d))\s+(?:years?|yrs?)\s+of\s+age\b", STRONG),
        Rule("short-y", r"(?<![\d.])(?P<phi>(?:9\d|1[0-2]\d)\s?y)(?:,|\s+(?:male|female|man|woman|old|[MF]\b))",
             CONTEXT),
        Rule("in-words", r"\b(?P<phi>(?:ninety|one[\s-]hundred(?:[\s-](?:and[\s-])?\w+)?)(?:[\s-](?:one|two|three|four"
                         r"|five|six|seven|eight|nine))?[\s-](?:years?|yrs?)[\s-]old)\b", STRONG),
        Rule("turned", r"\b(?:turned|turns|turning|age of|at age|reached)\s+(?P<phi>9\d|1[0-2]\d)(?![\d.%])", STRONG),
        Rule("in-her-90s", r"\b(?:in\s+(?:his|her|their)\s+)(?P<phi>(?:nineties|90s|hundreds))\b", CONTEXT),
    ],
    "PHONE_NUMBER": [
        Rule("nanp", r"(?<![\w+])(?:\+?1[\s.-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}"
                     r"(?:\s*(?:x|ext\.?|extension)\s*\d{1,6})?(?![\w-])", STRONG),
        Rule("international", r"(?<![\w+])\+(?:[2-9]\d{0,2})[\s.-]?(?:\(?\d{1,4}\)?[\s.-]?){2,4}\d{2,4}(?![\w-])",
             CONTEXT),
        Rule("in-context", after(r"phone|tel|telephone|cell|mobile|call|pager|beeper|contact|ph|home|work"),
             CONTEXT, lambda v: has_digits(v, 7)),
    ],
    "FAX_NUMBER": [
        Rule("fax", r"(?<![A-Za-z])fax(?:\s*(?:number|no\.?|#))?[\s:#.-]*(?P<phi>(?:\+?1[\s.-]?)?\(?\d{3}\)?[\s.-]?"
                    r"\d{3}[\s.-]?\d{4})(?!\d)", 0.95),
    ],
    "US_SSN": [
        Rule("dashed", r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])", STRONG),
        Rule("spaced", r"(?<![\d.])\d{3}[ .]\d{2}[ .]\d{4}(?![\d.])", CONTEXT),
        Rule("in-context", r"(?<![A-Za-z])(?:ssn|ss#|ss ?no|social security(?: number| no\.?| #)?|social)"
                           r"[\s:#.-]*(?:is\s+|ending(?:\s+in)?\s+|last\s+(?:4|four)(?:\s+digits)?[\s:]*|x{3}-?x{2}-?)*"
                           r"(?P<phi>\d{3}[\s.-]?\d{2}[\s.-]?\d{4}|\d{4})(?!\d)", 0.95),
    ],
    "MEDICAL_RECORD_NUMBER": [
        Rule("in-context", after(_any(r"mrn", r"mr", r"mr#", r"med\.? rec(?:ord)?", r"medical record", r"chart",
                                      r"patient", r"pt", r"hospital", r"record", r"unit number", r"emr", r"ehr",
                                      r"epic", r"cerner")), CONTEXT, id_ok),
        Rule("glued", r"(?<![A-Za-z0-9])MRN[-_:#]?(?P<phi>\d{4,12})(?!\d)", STRONG),
    ],
    "HEALTH_PLAN_ID": [
        Rule("medicare-mbi", r"(?<![A-Z0-9])[1-9][AC-HJKMNP-RT-Y][AC-HJKMNP-RT-Y0-9]\d-?[AC-HJKMNP-RT-Y]"
                             r"[AC-HJKMNP-RT-Y0-9]\d-?[AC-HJKMNP-RT-Y]{2}\d{2}(?![A-Z0-9])", STRONG, flags=0),
        Rule("in-context", after(_any(r"member", r"subscriber", r"policy", r"policyholder", r"group", r"insurance",
                                      r"insurer", r"plan", r"medicaid", r"medicare", r"mbi", r"hicn",
                                      r"beneficiary", r"health plan", r"coverage", r"payer", r"rx ?bin", r"pcn",
                                      r"rx ?grp", r"bcbs", r"aetna", r"cigna", r"humana", r"uhc", r"kaiser",
                                      r"unitedhealthcare", r"anthem", r"tricare")), CONTEXT, id_ok),
    ],
    "ACCOUNT_NUMBER": [
        Rule("in-context", after(_any(r"acct", r"account", r"a/c", r"billing", r"invoice", r"claim", r"encounter",
                                      r"visit", r"fin", r"har", r"csn", r"bank", r"routing", r"iban",
                                      r"statement", r"guarantor", r"card")), CONTEXT, id_ok),
    ],
    "LICENSE_NUMBER": [
        Rule("dea", r"(?<![A-Z0-9])[ABCDEFGHJKLMPRSTUX][A-Z9]\d{7}(?![A-Z0-9])", STRONG, dea_ok, flags=0),
        Rule("npi", r"(?<![A-Za-z0-9])npi[\s:#.-]*(?:number\s*)?(?P<phi>\d{10})(?!\d)", 0.95),
        Rule("npi-luhn", r"(?<![\d-])[12]\d{9}(?![\d-])", WEAK, npi_ok),
        Rule("in-context", after(_any(r"licen[sc]e", r"lic", r"dl", r"driver'?s licen[sc]e", r"certificate",
                                      r"cert", r"certification", r"registration", r"dea", r"npi", r"permit",
                                      r"passport", r"board", r"credential")), CONTEXT, id_ok),
    ],
    "VEHICLE_ID": [
        Rule("vin", r"(?<![A-Z0-9])[A-HJ-NPR-Z0-9]{17}(?![A-Z0-9])", STRONG, vin_ok),
        Rule("vin-in-context", r"(?<![A-Za-z])vin[\s:#.-]*(?:number\s*)?(?P<phi>[A-Z0-9][A-Z0-9-]{3,16}[A-Z0-9])(?![A-Z0-9])",
             0.95),
        Rule("plate-in-context", r"(?<![A-Za-z])(?:licen[sc]e plate|plate|tag|registration plate|vehicle)(?![a-z])"
                                 r"(?:\s*(?:number|no\.?|#))?[\s:#.-]*(?P<phi>(?-i:[A-Z0-9]{1,4}(?:[\s-]?[A-Z0-9]{1,4}){0,2}))"
                                 r"(?![A-Za-z0-9])", CONTEXT, lambda v: has_digits(v, 1) and any(c.isalpha() for c in v)),
    ],
    "DEVICE_ID": [
        Rule("udi-gs1", r"\(01\)\d{14}(?:\(\d{2,4}\)[A-Za-z0-9-]{1,20})*", STRONG),
        Rule("udi-hibcc", r"(?<![A-Za-z0-9])\+[A-Z]\d{3}[A-Z0-9]{4,18}(?:/[A-Z0-9$+%]{4,30})?(?![A-Za-z0-9])",
             STRONG, flags=0),
        Rule("mac", r"(?<![0-9A-F:-])[0-9A-F]{2}(?:[:-][0-9A-F]{2}){5}(?![0-9A-F:-])", STRONG),
        Rule("in-context", after(_any(r"serial", r"s/n", r"sn", r"ser", r"device", r"udi", r"lot", r"model (?:number|no|#)",
                                      r"imei", r"pacemaker", r"implant", r"pump", r"monitor", r"sensor",
                                      r"catalog", r"ref", r"asset")), CONTEXT, long_id_ok),
    ],
    "URL": [
        Rule("scheme", r"\b(?:https?|ftp|sftp)://[^\s<>\"'`]+[^\s<>\"'`.,;:!?)\]]", STRONG),
        Rule("www", r"(?<![\w@.])www\.[a-z0-9-]+(?:\.[a-z0-9-]+)+(?:/[^\s<>\"'`]*[^\s<>\"'`.,;:!?)\]])?", STRONG),
        Rule("bare-domain", r"(?<![\w@.\-/])[a-z0-9][a-z0-9-]*(?:\.[a-z0-9-]+)*\.(?:com|org|net|edu|gov|io|us"
                            r"|health|info|biz|me|co|ly)(?:/[^\s<>\"'`]*[^\s<>\"'`.,;:!?)\]])?(?![\w@-])", CONTEXT),
    ],
    "EMAIL_ADDRESS": [
        Rule("address", r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}(?![\w-])",
             STRONG),
    ],
    "IP_ADDRESS": [
        Rule("ipv4", r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
                     r"(?:/\d{1,2})?(?!\d|\.\d)", STRONG),
        Rule("ipv6", r"(?<![\w:])(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4}(?![\w:])"
                     r"|(?<![\w:])(?=[0-9a-f:]*::)(?:[0-9a-f]{1,4}(?::[0-9a-f]{1,4}){0,6})?::"
                     r"(?:[0-9a-f]{1,4}(?::[0-9a-f]{1,4}){0,6})?(?![\w:])", STRONG, lambda v: v.count(":") >= 3),
    ],
    "ZIP_CODE": [
        Rule("zip-plus-four", r"(?<![\d-])\d{5}-\d{4}(?![\d-])", STRONG),
        Rule("after-state", rf"\b(?:{_STATE_CODES})\.?,?\s+(?P<phi>\d{{5}}(?:-\d{{4}})?)(?![\d-])", STRONG, flags=0),
        Rule("in-context", r"(?<![A-Za-z])(?:zip|zip ?code|postal ?code|zipcode)[\s:#]*(?:is\s+)?"
                           r"(?P<phi>\d{3,5}(?:-\d{4})?)(?!\d)", 0.95),
        # "42 Elm Street, Springfield 01105": the last line of a postal address without a state.
        Rule("after-street-city", rf"\b{_STREET_SUFFIX}\b\.?,\s+[A-Z][a-z]+(?:[\s-][A-Z][a-z]+){{0,2}},?\s+"
                                  r"(?P<phi>\d{5}(?:-\d{4})?)(?![\d-])", STRONG, flags=0),
    ],
    "STREET_ADDRESS": [
        Rule("street", rf"(?<![\w/.-])\d{{1,6}}[A-Z]?\s+(?:[NSEW]\.?\s+|(?:North|South|East|West)\s+)?"
                       rf"(?:[A-Za-z0-9][A-Za-z0-9'.-]*\s+){{1,4}}{_STREET_SUFFIX}\b\.?(?:\s+(?:[NS][EW]?|[EW])\b\.?)?{_UNIT}", STRONG),
        Rule("house-number", rf"(?<![\w/.-])\d{{1,6}}[A-Z]?\s+(?:[A-Z][a-z]+\.?\s+){{1,3}}[A-Z][a-z]+\.?{_UNIT}"
                             r"(?=\s*,|\s*$)", CONTEXT, flags=0),
        Rule("after-address-word", rf"(?<![A-Za-z])(?i:lives at|living at|resides at|residing at|address(?: is)?"
                                   rf"|located at|home at|home address)[\s:]+(?P<phi>\d{{1,6}}[A-Z]?\s+[^,;\n]{{3,60}})",
             CONTEXT, flags=0),
        Rule("po-box", r"\b(?:P\.?\s?O\.?\s?Box|Post Office Box)\s+\d{1,6}\b", STRONG),
        Rule("unit", r"\b(?:Apt|Apartment|Suite|Ste|Unit)\.?\s*#?\s*(?P<phi>\d+[A-Z]?)\b", CONTEXT),
    ],
    "LOCATION": [
        Rule("city-state", rf"(?P<phi>\b[A-Z][a-z]+(?:[\s-][A-Z][a-z]+){{0,2}}),\s*(?:{_STATE_CODES})\b(?!\.\w)",
             CONTEXT, _plausible_name, flags=0),
        Rule("county", r"\b[A-Z][a-z]+(?:\s[A-Z][a-z]+)?\s(?:County|Parish|Borough|Township)\b", STRONG, flags=0),
        Rule("lives-in", r"(?<![A-Za-z])(?i:lives in|living in|resides in|resident of|moved to|relocated to"
                         r"|born in|home in|hometown|from the town of|city of|town of|village of)\s+"
                         r"(?P<phi>[A-Z][a-z]+(?:[\s-][A-Z][a-z]+){0,2})", CONTEXT, flags=0),
    ],
    "ORGANIZATION": [
        Rule("facility", rf"\b(?:(?:St\.?|Saint|Mount|Mt\.?)\s+)?(?:[A-Z][A-Za-z'.&-]+\s+){{1,4}}{_HOSPITAL_WORD}"
                         r"(?:\s+(?:Hospital|Medical Center|Clinic|Campus))?\b", CONTEXT, _plausible_name, flags=0),
        Rule("saint", r"\b(?:St\.?|Saint|Mount|Mt\.?)\s+[A-Z][a-z]+(?:'s)?(?:\s+[A-Z][a-z]+){0,3}\b", CONTEXT, flags=0),
        Rule("in-context", r"(?<![A-Za-z])(?i:admitted to|transferred to|transferred from|seen at|treated at"
                           r"|discharged from|followed at|presented to|referred to|from)\s+(?:the\s+)?"
                           rf"(?P<phi>(?:[A-Z][A-Za-z'.&-]+\s+){{0,3}}{_HOSPITAL_WORD})", CONTEXT, flags=0),
    ],
    "OTHER_ID": [
        Rule("in-context", after(_any(r"id", r"identifier", r"ident", r"case", r"reference", r"ref", r"confirmation",
                                      r"ticket", r"order", r"accession", r"specimen", r"sample", r"requisition",
                                      r"employee", r"badge", r"student", r"tracking", r"barcode", r"control",
                                      r"user ?name", r"user ?id", r"login", r"handle", r"#")), CONTEXT, long_id_ok),
        Rule("long-number", r"(?<![\w.$-])\d{7,}(?![\w%]|\.\d)", WEAK, not_after=_CODE_SYSTEMS),
        Rule("code", r"(?<![\w.-])(?=[A-Z0-9-]*[A-Z])[A-Z0-9]+(?:-[A-Z0-9]+)*(?![\w-])", WEAK, is_code_like,
             flags=0, not_after=_CODE_SYSTEMS),
    ],
}


class CensusNameRecognizer(EntityRecognizer):
    """Given name + surname pairs from the census lexicons: "Mark Cross", and in lower case after
    a clinical keyword, "pt john smith"."""

    _CAPITALIZED = re.compile(rf"(?<![A-Za-z'])({_NAME})\s+(?:[A-Z]\.?\s+)?({_NAME})(?![A-Za-z])")
    _LOWER = re.compile(r"(?<![a-z])(?:patient|pt|name|mr|mrs|ms|dr|son|daughter|wife|husband|mother|father"
                        r"|brother|sister|spouse|contact|caregiver|called|call)\.?[\s:,-]+"
                        r"(?P<phi>([a-z][a-z'-]+)\s+(?:[a-z]\.?\s+)?([a-z][a-z'-]+))(?![a-z])", re.IGNORECASE)

    _UPPER = re.compile(r"(?<![A-Za-z'])([A-Z][A-Z'-]+)\s+(?:[A-Z]\.?\s+)?([A-Z][A-Z'-]+)(?![A-Za-z])")
    _SURNAME_FIRST = re.compile(rf"(?<![A-Za-z'])([A-Z][A-Za-z'-]+),\s*([A-Z][A-Za-z'-]+)(?:\s+[A-Z]\.?)?(?![A-Za-z])")
    _POSSESSIVE = re.compile(rf"(?<![A-Za-z'])({_NAME})'s\s+(?:visit|appointment|chart|record|records|labs|results"
                             r"|mri|ct|surgery|admission|discharge|medications|meds|insurance|address|phone|email"
                             r"|mother|father|wife|husband|son|daughter|family|case|care|condition|diagnosis"
                             r"|prescription|referral|bill|account|claim|room|birthday|home)\b")

    def __init__(self):
        super().__init__(supported_entities=["PERSON"], name="PhigateCensusName")

    def load(self) -> None:
        self.given, self.surnames = given_names(), surnames()

    def analyze(self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None):
        if entities and "PERSON" not in entities:
            return []
        spans = [m.span() for m in self._CAPITALIZED.finditer(text) if self._is_name(m.group(1), m.group(2))]
        spans += [m.span("phi") for m in self._LOWER.finditer(text) if self._is_name(m.group(2), m.group(3))]
        spans += [m.span() for m in self._UPPER.finditer(text) if self._is_name(m.group(1), m.group(2))]
        spans += [m.span() for m in self._SURNAME_FIRST.finditer(text) if self._is_name(m.group(2), m.group(1))]
        spans += [m.span(1) for m in self._POSSESSIVE.finditer(text)
                  if m.group(1).lower() in self.surnames or m.group(1).lower() in self.given]
        return [RecognizerResult("PERSON", start, end, NAME,
                                 recognition_metadata={RecognizerResult.RECOGNIZER_NAME_KEY: self.name,
                                                       RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
                                                       RecognizerResult.IS_SCORE_ENHANCED_BY_CONTEXT_KEY: True})
                for start, end in spans]

    def _is_name(self, given: str, surname: str) -> bool:
        return given.lower() in self.given and surname.lower().replace("'", "") in self.surnames


def build_pack() -> list[EntityRecognizer]:
    recognizers: list[EntityRecognizer] = [RuleRecognizer(entity, rules) for entity, rules in PACK.items()]
    census = CensusNameRecognizer()
    census.load()
    return recognizers + [census]


def pack_fingerprint() -> str:
    """Hash of every rule, so a changed rule changes the detector version (and the cache key)."""
    digest = hashlib.sha256()
    for path in (GIVEN_FILE, SURNAME_FILE):
        digest.update(path.read_bytes())
    for entity, rules in PACK.items():
        for rule in rules:
            digest.update(f"{entity}\0{rule.name}\0{rule.regex}\0{rule.score}\0{rule.flags}\n".encode())
    return digest.hexdigest()
