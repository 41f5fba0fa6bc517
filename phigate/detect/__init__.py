"""PHI detection: Presidio's analyzer with phigate's HIPAA Safe Harbor recognizer pack.

    detector = Detector.from_config(None)          # or a YAML path; build once per process
    findings = detector.analyze([TextField("Pt John Smith, MRN 4455667"), TextField("1950-02-03", "birthDate")])

Entity types and the Safe Harbor identifier (45 CFR 164.514(b)(2)(i)) each one covers:

| entity_type            | Safe Harbor | found by                                                   |
|------------------------|-------------|------------------------------------------------------------|
| PERSON                 | A           | spaCy NER; titles (Dr., Mrs.); clinical context (pt, son)  |
| STREET_ADDRESS         | B           | number + street suffix, PO Box, Apt/Suite                   |
| LOCATION               | B           | NER places (not states/countries); "City, ST"; "X County"   |
| ZIP_CODE               | B           | ZIP+4; 5 digits after a state code or "zip"                 |
| DATE                   | C           | full, month-day and month-year dates (never a bare year)    |
| AGE_OVER_89            | C           | ages 90-129 ("92 yo", "aged 95", "91F")                     |
| PHONE_NUMBER           | D           | NANP and +international shapes; digits after "phone"/"cell" |
| FAX_NUMBER             | E           | a number after "fax"                                        |
| EMAIL_ADDRESS          | F           | local-part@domain.tld                                       |
| US_SSN                 | G           | any ddd-dd-dddd (also never-issued ranges); "SSN" context   |
| MEDICAL_RECORD_NUMBER  | H           | "MRN", "chart", "medical record" + id                       |
| HEALTH_PLAN_ID         | I           | Medicare MBI shape; "member/subscriber/policy/plan" + id    |
| ACCOUNT_NUMBER         | J           | "acct", "account", "claim", "encounter", "FIN" + id         |
| LICENSE_NUMBER         | K           | DEA (check digit), NPI (Luhn), "licence/cert/DL" + id       |
| VEHICLE_ID             | L           | VIN (check digit); "VIN", "plate" + value                   |
| DEVICE_ID              | M           | UDI (GS1, HIBCC), MAC; "serial/S/N/device/lot" + id         |
| URL                    | N           | scheme, www., bare domains on common TLDs                   |
| IP_ADDRESS             | O           | IPv4 (octets checked, optional /prefix), IPv6               |
| ORGANIZATION           | B, R        | hospital/clinic names ("Mercy General", "St. Jude's")      |
| OTHER_ID               | R           | "ID", "#", "case", "ref" + id; 7+ digit numbers; long codes |

(P) biometrics and (Q) photographs do not occur in text. A value under a JSON key that names an
identifier (birthDate, mrn, ssn, telecom, address, name, identifier, ...; see keys.py) is
reported whole with the key's type. Ages 89 and under, bare years, state names, diagnoses,
medications, doses, lab values and technical tokens are not identifiers and are left alone.

Configuration (YAML, all keys optional): ``nlp_configuration`` is Presidio's NLP-engine
configuration (point it at en_core_web_lg or a transformers model), ``recognizer_registry`` is
Presidio's recognizer-registry configuration whose recognizers are added to the pack,
``disabled_components``, ``score_threshold``, ``cache_size`` and ``fused_ner_encoder`` (spaCy's
CNN NER token encoder run as one numpy layer, see fastner.py; on by default).
"""

from phigate.detect.detector import Detector, Finding, TextField, bundled_model_path, load_config

__all__ = ["Detector", "Finding", "TextField", "bundled_model_path", "load_config"]
