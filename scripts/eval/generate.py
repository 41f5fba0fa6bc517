"""Seeded generator of a labeled PHI evaluation set (JSONL).

    python scripts/eval/generate.py --seed 20261124 --count 1200 --out scripts/eval/phi_eval.jsonl

Each line: {"id", "kind", "fields": [{"text", "key"}], "spans": [[field, start, end, entity_type]]}.
kinds: fhir (FHIR-shaped JSON leaves), query (short clinician questions), note (long notes),
negative (PHI-free text full of ages <= 89, years, drugs, doses, labs, states, technical tokens).
``--templates tune`` draws only from the first half of each template list; the committed
evaluation set uses ``--templates all`` with a different seed, so rules are not fit to it.
"""

from __future__ import annotations

import argparse
import json
import random
import string
from pathlib import Path

from faker import Faker

MBI_LETTERS = "ACDEFGHJKMNPQRTUVWXY"
STATES = ["AL", "AZ", "CA", "CO", "FL", "GA", "IL", "MA", "MI", "MN", "NC", "NJ", "NY", "OH", "OR", "PA",
          "TX", "VA", "WA", "WI"]
STATE_NAMES = ["Ohio", "Texas", "California", "New York", "Florida", "Georgia", "Oregon", "Maine", "Vermont",
               "Arizona", "Michigan", "North Carolina", "Pennsylvania", "Illinois"]
DRUGS = ["metformin", "lisinopril", "atorvastatin", "Lasix", "furosemide", "Eliquis", "apixaban", "warfarin",
         "insulin glargine", "amoxicillin", "Zofran", "prednisone", "levothyroxine", "Keppra", "vancomycin",
         "Tylenol", "ibuprofen", "Ozempic", "semaglutide", "Jardiance", "Coumadin", "Norvasc", "Xarelto"]
DIAGNOSES = ["CHF", "COPD exacerbation", "type 2 diabetes (E11.9)", "CKD stage 3", "HTN", "atrial fibrillation",
             "pneumonia", "sepsis", "UTI", "NSTEMI", "DVT", "Crohn's disease", "Parkinson's disease",
             "Alzheimer's dementia", "hypothyroidism", "ICD-10 I50.9", "J44.1", "N18.3"]
LABS = ["HbA1c 7.2%", "Na 138", "K 4.1 mmol/L", "creatinine 1.4 mg/dL", "eGFR 58", "WBC 11.2", "Hgb 9.8",
        "platelets 250", "troponin 0.04", "BNP 1250", "INR 2.3", "TSH 3.1", "LDL 131", "glucose 212 mg/dL",
        "BP 142/88", "HR 96", "SpO2 94% on RA", "temp 38.2 C", "lactate 2.1", "A1c of 8.4"]
TECH = ["C4", "S3", "EKS", "gpt-4o", "gpt-4o-mini", "HbA1c", "ICD-10", "LOINC 4548-4", "CPT 99213", "HTTP 404",
        "v2.3.1", "K8s", "EC2", "t3.large", "Python 3.13", "HL7 v2", "FHIR R4", "SNOMED 44054006", "P95 latency",
        "SHA-256", "UTF-8", "ISO 8601", "us-east-1", "o3-mini", "H100", "Lambda", "RDS", "x86_64"]


def luhn_check_digit(payload: str) -> str:
    total = 0
    for position, char in enumerate(reversed(payload)):
        value = int(char)
        if position % 2 == 0:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return str((10 - total % 10) % 10)


class Values:
    """Random identifier values, one generator method per entity type."""

    def __init__(self, rng: random.Random, fake: Faker):
        self.rng, self.fake = rng, fake

    def digits(self, n: int) -> str:
        return "".join(self.rng.choice(string.digits) for _ in range(n))

    def PERSON(self) -> str:
        return self.rng.choice([self.fake.name_nonbinary, self.fake.name, lambda: self.fake.first_name() + " "
                                + self.fake.last_name(), self.fake.last_name])()

    def DATE(self) -> str:
        d = self.fake.date_between("-90y", "+1y")
        return self.rng.choice([d.strftime("%m/%d/%Y"), d.isoformat(), d.strftime("%B %-d, %Y"),
                                d.strftime("%-d %B %Y"), d.strftime("%b %-d"), d.strftime("%B %Y"),
                                d.strftime("%-m/%-d/%y"), d.strftime("%b. %-d, %Y"), d.strftime("%-m-%-d-%Y")])

    def AGE_OVER_89(self) -> str:
        n = self.rng.randint(90, 104)
        return self.rng.choice([f"{n}-year-old", f"{n} yo", f"{n}yo", f"{n} y/o", f"{n} years old"])

    def PHONE_NUMBER(self) -> str:
        a, b, c = f"{self.rng.randint(201, 989)}", f"{self.rng.randint(200, 999)}", self.digits(4)
        return self.rng.choice([f"({a}) {b}-{c}", f"{a}-{b}-{c}", f"{a}.{b}.{c}", f"+1 {a} {b} {c}",
                                f"1-{a}-{b}-{c}"])

    FAX_NUMBER = PHONE_NUMBER

    def EMAIL_ADDRESS(self) -> str:
        return self.rng.choice([self.fake.email, self.fake.company_email, self.fake.free_email])()

    def US_SSN(self) -> str:
        area = self.rng.choice([self.digits(3), "000", "666", f"9{self.digits(2)}"])
        return self.rng.choice([f"{area}-{self.digits(2)}-{self.digits(4)}", f"{area} {self.digits(2)} "
                                f"{self.digits(4)}"])

    def MEDICAL_RECORD_NUMBER(self) -> str:
        return self.rng.choice([self.digits(self.rng.randint(6, 10)), f"{self.rng.choice('ABEHMZ')}"
                                f"{self.digits(7)}", f"{self.digits(3)}-{self.digits(2)}-{self.digits(3)}"])

    def HEALTH_PLAN_ID(self) -> str:
        letter, anyc = (lambda: self.rng.choice(MBI_LETTERS)), (lambda: self.rng.choice(MBI_LETTERS + string.digits))
        mbi = (f"{self.rng.randint(1, 9)}{letter()}{anyc()}{self.digits(1)}{letter()}{anyc()}{self.digits(1)}"
               f"{letter()}{letter()}{self.digits(2)}")
        return self.rng.choice([mbi, f"{''.join(self.rng.choices(string.ascii_uppercase, k=3))}{self.digits(9)}",
                                f"W{self.digits(9)}", f"{self.digits(3)}{self.rng.choice('AB')}{self.digits(6)}"])

    def ACCOUNT_NUMBER(self) -> str:
        return self.rng.choice([self.digits(self.rng.randint(6, 12)), f"{self.digits(4)}-{self.digits(6)}",
                                f"AC{self.digits(8)}"])

    def LICENSE_NUMBER(self) -> str:
        letters = self.rng.choice("ABFGM") + self.rng.choice(string.ascii_uppercase)
        d = [self.rng.randint(0, 9) for _ in range(6)]
        dea = letters + "".join(map(str, d)) + str((d[0] + d[2] + d[4] + 2 * (d[1] + d[3] + d[5])) % 10)
        npi_payload = self.rng.choice("12") + self.digits(8)
        npi = npi_payload + luhn_check_digit("80840" + npi_payload)
        state = f"{self.rng.choice(['MD', 'RN', 'C', 'G', 'A'])}{self.digits(self.rng.randint(5, 7))}"
        return self.rng.choice([dea, npi, state])

    def VEHICLE_ID(self) -> str:
        chars = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"
        values = {c: v for c, v in zip("0123456789", range(10))}
        values.update(zip("ABCDEFGH", range(1, 9)))
        values.update(zip("JKLMN", range(1, 6)))
        values.update({"P": 7, "R": 9})
        values.update(zip("STUVWXYZ", range(2, 10)))
        weights = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)
        vin = [self.rng.choice(chars) for _ in range(17)]
        vin[8] = "0"  # weight 0: the check digit does not count towards itself
        total = sum(values[c] * w for c, w in zip(vin, weights))
        vin[8] = "X" if total % 11 == 10 else str(total % 11)
        plate = self.rng.choice([f"{''.join(self.rng.choices(string.ascii_uppercase, k=3))}-{self.digits(4)}",
                                 f"{self.digits(1)}{''.join(self.rng.choices(string.ascii_uppercase, k=3))}"
                                 f"{self.digits(3)}"])
        return self.rng.choice(["".join(vin), plate])

    def DEVICE_ID(self) -> str:
        return self.rng.choice([f"(01){self.digits(14)}(17){self.digits(6)}(21){self.digits(6)}",
                                f"SN{self.digits(8)}", f"{self.rng.choice('ABCXYZ')}{self.digits(3)}-"
                                f"{self.digits(5)}", f"PM{self.digits(6)}{self.rng.choice('HKS')}"])

    def URL(self) -> str:
        return self.rng.choice([self.fake.url() + f"patients/{self.digits(5)}", self.fake.url(),
                                f"www.{self.fake.domain_name()}/chart", self.fake.domain_name()])

    def IP_ADDRESS(self) -> str:
        return self.rng.choice([self.fake.ipv4_private, self.fake.ipv4_public, self.fake.ipv6])()

    def ZIP_CODE(self) -> str:
        return self.fake.postcode()

    def STREET_ADDRESS(self) -> str:
        return self.fake.street_address()

    def LOCATION(self) -> str:
        return self.fake.city()

    def ORGANIZATION(self) -> str:
        name, city = self.fake.last_name(), self.fake.city()
        return self.rng.choice([f"{name} Memorial Hospital", f"St. {self.fake.first_name()}'s Medical Center",
                                f"{city} General Hospital", f"{city} Family Clinic", f"{name} Regional Medical "
                                f"Center", f"Mount {name} Hospital", f"{city} Urgent Care"])


# Templates: text with {TYPE} slots (labeled) and {age}, {year}, {drug}, {dx}, {lab}, {state}, {tech}
# fillers (never PHI). Order matters: --templates tune uses the first half only.
QUERIES = [
    "Pt {PERSON}, {AGE_OVER_89}, MRN {MEDICAL_RECORD_NUMBER}, admitted {DATE} with {dx}. Next step?",
    "Can you summarize the chart for {PERSON} (DOB {DATE})? On {drug} since {year}.",
    "what dose of {drug} for a {AGE_OVER_89} with {dx}, {lab}? pt is {PERSON}",
    "Call back {PERSON} at {PHONE_NUMBER} re: {lab} from {DATE}",
    "Fax the discharge summary to {FAX_NUMBER}, attn Dr. {PERSON}",
    "Patient SSN {US_SSN}, member ID {HEALTH_PLAN_ID} - verify coverage for {drug}",
    "Draft a letter to {EMAIL_ADDRESS} about {PERSON}'s visit on {DATE}",
    "Bill acct # {ACCOUNT_NUMBER} for the {DATE} visit at {ORGANIZATION}",
    "Dr. {PERSON} (DEA/NPI {LICENSE_NUMBER}) prescribed {drug}; is that safe with {dx}?",
    "Pt's car VIN {VEHICLE_ID} was in the accident on {DATE}; any concern for {dx}?",
    "pacemaker serial {DEVICE_ID} alarm, pt {PERSON} age {AGE_OVER_89}",
    "Portal link {URL} shows {lab}; IP {IP_ADDRESS} logged in",
    "Mailing address: {STREET_ADDRESS}, {LOCATION}, {state_code} {ZIP_CODE}",
    "Transfer {PERSON} from {ORGANIZATION} to {ORGANIZATION} tomorrow",
    "{PERSON} ({AGE_OVER_89}) lives in {LOCATION} with her son {PERSON}",
    "medicare id {HEALTH_PLAN_ID}, MRN: {MEDICAL_RECORD_NUMBER}, phone {PHONE_NUMBER}",
    "Is {drug} ok for Mr. {PERSON}? seen {DATE}, {lab}",
    "SSN: {US_SSN}; email {EMAIL_ADDRESS}; {dx}",
    "Reach the daughter, {PERSON}, on {PHONE_NUMBER} before {DATE}",
    "Device S/N {DEVICE_ID} implanted {DATE} at {ORGANIZATION}",
]
NOTES = [
    ("HPI: {PERSON} is a {AGE_OVER_89} with {dx} and {dx} who presented to {ORGANIZATION} on {DATE} with "
     "dyspnea. Home meds: {drug}, {drug}. Labs: {lab}, {lab}, {lab}. She lives at {STREET_ADDRESS}, "
     "{LOCATION}, {state_code} {ZIP_CODE} with her husband {PERSON}. PCP Dr. {PERSON}, phone {PHONE_NUMBER}, "
     "fax {FAX_NUMBER}. MRN {MEDICAL_RECORD_NUMBER}. Insurance member ID {HEALTH_PLAN_ID}. Plan: continue "
     "{drug}, recheck {lab} on {DATE}."),
    ("Discharge summary for {PERSON} (DOB: {DATE}, SSN {US_SSN}). Admitted {DATE}, discharged {DATE}. "
     "Diagnosis: {dx}. Follow up at {ORGANIZATION} ({URL}). Patient's email {EMAIL_ADDRESS}. Account number "
     "{ACCOUNT_NUMBER}. Emergency contact: {PERSON} {PHONE_NUMBER}. Diagnosed with {dx} in {year}; ages "
     "of siblings {age} and {age}."),
    ("Progress note {DATE}. {AGE_OVER_89} man, history of {dx} since {year}, on {drug} and {drug}. "
     "{lab}; {lab}. Pacemaker serial number {DEVICE_ID}. Drives a car with plate {VEHICLE_ID}. Seen with "
     "his wife {PERSON}. Remote monitoring from IP {IP_ADDRESS}. Signed: {PERSON}, MD, license "
     "{LICENSE_NUMBER}."),
    ("Consult: {PERSON}, a {AGE_OVER_89} from {LOCATION}, {state_code}, transferred from {ORGANIZATION} on "
     "{DATE} for {dx}. Medicare MBI {HEALTH_PLAN_ID}. MRN# {MEDICAL_RECORD_NUMBER}. Address {STREET_ADDRESS}. "
     "Contact {PHONE_NUMBER} or {EMAIL_ADDRESS}. {lab}. Moved from {state} in {year}."),
]
NEGATIVES = [
    "{age}-year-old with {dx}, on {drug} {dose} since {year}. {lab}, {lab}.",
    "Compare {drug} vs {drug} in patients aged {age} to {age} with {dx}; trial ran {year}-{year}.",
    "Our {tech} cluster on {tech} with {tech} stores notes in {tech}; model {tech}, latency {lab}.",
    "{state} Medicaid covers {drug} {dose} for {dx}; {state} does not. Policy changed in {year}.",
    "Pt is {age} yo, {lab}, {lab}. Start {drug} {dose} daily, titrate over {age} days.",
    "Map {tech} codes to {tech}; e.g. {dx} and {dx}. Returned {tech} after {age} retries.",
    "A {age} y/o M with {dx} in {year}, {drug} {dose} PO BID, {lab}, {lab}, {lab}.",
    "Residents of {state} and {state} aged {age}+ saw {dx} rates rise from {year} to {year}.",
    "Use {tech} and {tech} for the {dx} cohort (n={age}); {drug} {dose}; {lab}.",
    "Guidelines ({year}) for {dx}: {drug} {dose} if {lab}; consider {drug} when age > {age}.",
]
DOSES = ["500 mg", "25mg", "10 mg", "0.5 mg", "40 mg IV", "2 units", "1 g", "81 mg", "5 mcg", "100 mg/5 mL"]


class Builder:
    """Fills a template, recording the character span of each labeled slot."""

    def __init__(self, rng: random.Random, values: Values):
        self.rng, self.values = rng, values

    def filler(self, name: str) -> str:
        rng = self.rng
        return {"age": lambda: str(rng.randint(1, 89)), "year": lambda: str(rng.randint(1975, 2026)),
                "drug": lambda: rng.choice(DRUGS), "dx": lambda: rng.choice(DIAGNOSES),
                "lab": lambda: rng.choice(LABS), "state": lambda: rng.choice(STATE_NAMES),
                "tech": lambda: rng.choice(TECH), "dose": lambda: rng.choice(DOSES),
                "state_code": lambda: rng.choice(STATES)}[name]()

    def fill(self, template: str) -> tuple[str, list[tuple[int, int, str]]]:
        text, spans, rest = "", [], template
        while "{" in rest:
            before, _, tail = rest.partition("{")
            slot, _, rest = tail.partition("}")
            text += before
            if slot.isupper():
                value = getattr(self.values, slot)()
                spans.append((len(text), len(text) + len(value), slot))
                text += value
            else:
                text += self.filler(slot)
        return text + rest, spans


def fhir_patient(values: Values, rng: random.Random) -> list[tuple[str | None, str, str | None]]:
    """Leaves of a FHIR Patient/Coverage/Device as (key, text, entity or None)."""
    name = values.fake.first_name(), values.fake.last_name()
    leaves = [("resourceType", "Patient", None), ("gender", rng.choice(["female", "male"]), None),
              ("family", name[1], "PERSON"), ("given", name[0], "PERSON"), ("birthDate", values.fake.date_of_birth(
                  minimum_age=1, maximum_age=100).isoformat(), "DATE"),
              ("system", "phone", None), ("value", values.PHONE_NUMBER(), "PHONE_NUMBER"),
              ("system", "email", None), ("value", values.EMAIL_ADDRESS(), "EMAIL_ADDRESS"),
              ("line", values.STREET_ADDRESS(), "STREET_ADDRESS"), ("city", values.LOCATION(), "LOCATION"),
              ("state", rng.choice(STATES), None), ("postalCode", values.ZIP_CODE(), "ZIP_CODE"),
              ("system", "http://hl7.org/fhir/sid/us-ssn", None), ("value", values.US_SSN(), "US_SSN"),
              ("mrn", values.MEDICAL_RECORD_NUMBER(), "MEDICAL_RECORD_NUMBER"),
              ("telecom", values.PHONE_NUMBER(), "PHONE_NUMBER"),
              ("subscriberId", values.HEALTH_PLAN_ID(), "HEALTH_PLAN_ID"),
              ("serialNumber", values.DEVICE_ID(), "DEVICE_ID"),
              ("status", "active", None), ("code", rng.choice(["E11.9", "I10", "4548-4", "J44.1"]), None),
              ("text", f"{rng.choice(DIAGNOSES)}, {rng.choice(LABS)}", None),
              ("unit", rng.choice(["mg/dL", "mmol/L", "%"]), None)]
    return rng.sample(leaves, k=rng.randint(8, len(leaves)))


def generate(seed: int, count: int, templates: str) -> list[dict]:
    rng = random.Random(seed)
    fake = Faker("en_US")
    fake.seed_instance(seed)
    values = Values(rng, fake)
    builder = Builder(rng, values)
    pools = {"query": QUERIES, "note": NOTES, "negative": NEGATIVES}
    if templates == "tune":
        pools = {kind: pool[: max(1, len(pool) // 2)] for kind, pool in pools.items()}
    records = []
    for index in range(count):
        kind = rng.choices(["fhir", "query", "note", "negative"], weights=[2, 4, 2, 3])[0]
        if kind == "fhir":
            leaves = fhir_patient(values, rng)
            fields = [{"text": text, "key": key} for key, text, _ in leaves]
            spans = [[i, 0, len(text), entity] for i, (_, text, entity) in enumerate(leaves) if entity]
        else:
            text, found = builder.fill(rng.choice(pools[kind]))
            fields = [{"text": text, "key": rng.choice([None, "content", "text", "input"])}]
            spans = [[0, start, end, entity] for start, end, entity in found]
        records.append({"id": f"{kind}-{index}", "kind": kind, "fields": fields, "spans": spans})
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=20261124)
    parser.add_argument("--count", type=int, default=1200)
    parser.add_argument("--templates", choices=["all", "tune"], default="all")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("phi_eval.jsonl"))
    args = parser.parse_args()
    with args.out.open("w") as out:
        for record in generate(args.seed, args.count, args.templates):
            out.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
