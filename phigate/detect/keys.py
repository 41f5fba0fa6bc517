"""JSON keys whose value is PHI whatever its shape (FHIR resources are the common case).

A value under ``birthDate`` or ``mrn`` is masked whole without running NLP: the key decides.
Keys are compared after lower-casing and dropping everything but letters and digits, so
``birth_date``, ``birthDate`` and ``Birth-Date`` are the same key.
"""

from __future__ import annotations

import re

_KEY_ENTITIES: dict[str, tuple[str, ...]] = {
    "PERSON": ("name", "family", "given", "firstname", "lastname", "middlename", "fullname", "surname",
               "patientname", "givenname", "familyname", "maidenname", "mothersmaidenname", "nickname",
               "username", "displayname", "contactname", "guarantorname", "subscribername"),
    "DATE": ("birthdate", "dob", "dateofbirth", "birthday", "deceaseddatetime", "deceaseddate", "dateofdeath",
             "admissiondate", "dischargedate", "admitdate", "servicedate", "encounterdate", "visitdate"),
    "US_SSN": ("ssn", "socialsecuritynumber", "socialsecurity", "ssnumber"),
    "MEDICAL_RECORD_NUMBER": ("mrn", "medicalrecordnumber", "medicalrecord", "chartnumber", "patientmrn"),
    "PHONE_NUMBER": ("phone", "phonenumber", "telephone", "tel", "mobile", "mobilephone", "cell", "cellphone",
                     "homephone", "workphone", "telecom", "pager", "contactnumber"),
    "FAX_NUMBER": ("fax", "faxnumber"),
    "EMAIL_ADDRESS": ("email", "emailaddress", "mail"),
    "STREET_ADDRESS": ("address", "line", "streetaddress", "street", "address1", "address2", "addressline1",
                       "addressline2", "homeaddress", "mailingaddress"),
    "LOCATION": ("city", "county", "district", "town", "municipality", "neighborhood"),
    "ZIP_CODE": ("postalcode", "zip", "zipcode", "postcode"),
    "HEALTH_PLAN_ID": ("memberid", "membernumber", "subscriberid", "policynumber", "policyid", "insuranceid",
                       "mbi", "medicareid", "medicaidid", "beneficiaryid", "healthplanid", "groupnumber"),
    "ACCOUNT_NUMBER": ("accountnumber", "account", "accountid", "acct", "billingaccount", "claimnumber",
                       "claimid", "encounternumber", "financialnumber"),
    "LICENSE_NUMBER": ("license", "licensenumber", "licence", "licencenumber", "npi", "dea", "deanumber",
                       "driverslicense", "certificatenumber", "passportnumber"),
    "VEHICLE_ID": ("vin", "licenseplate", "plate", "platenumber", "vehicleid"),
    "DEVICE_ID": ("deviceid", "serialnumber", "serial", "udi", "udicarrier", "deviceidentifier", "imei",
                  "carrierhrf", "carrieraidc", "lotnumber"),
    "URL": ("url", "website", "homepage", "webpage"),
    "IP_ADDRESS": ("ip", "ipaddress", "clientip", "remoteaddr"),
    "OTHER_ID": ("identifier", "patientid", "personid", "subjectid", "ssnlast4", "externalid"),
}

# Enumerations and terminology URIs in FHIR: never PHI, and masking them breaks the resource.
NOT_PHI_KEYS = frozenset({"resourcetype", "system", "gender", "status", "use", "unit"})

KEY_ENTITY: dict[str, str] = {key: entity for entity, keys in _KEY_ENTITIES.items() for key in keys}

# Values under these keys are masked whole only when they are short; a long value is prose
# (e.g. a FHIR narrative under "address") and goes through the full analysis instead.
MAX_KEYED_VALUE = 200

# "name" is also what tools, functions, spans and workflows are called (Agents SDK traces,
# tool definitions): a snake_case or dotted code identifier there is analysed, not presumed PHI.
_CODE_IDENTIFIER = re.compile(r"[a-z][a-z0-9]*(?:[_.][a-z0-9]+)+")


def normalize_key(key: str) -> str:
    return re.sub(r"[^a-z0-9]", "", key.lower())


def is_not_phi_key(key: str | None) -> bool:
    return key is not None and normalize_key(key) in NOT_PHI_KEYS


# FHIR puts identifiers under generic keys (identifier.value, resource id): an ID-shaped value
# there is an identifier even without a keyword next to it.
GENERIC_ID_KEYS = frozenset({"value", "id"})
_ID_SHAPED = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-/_:]{3,63}")


def entity_for_key(key: str | None, text: str) -> str | None:
    """The entity type the key forces on the whole value, or None when the key does not decide."""
    if not key or len(text) > MAX_KEYED_VALUE:
        return None
    entity = KEY_ENTITY.get(normalize_key(key))
    if entity == "PHONE_NUMBER" and "@" in text:  # FHIR telecom holds emails too
        return "EMAIL_ADDRESS"
    if normalize_key(key) == "name" and _CODE_IDENTIFIER.fullmatch(text.strip()):
        return None
    return entity


def is_identifier_under_generic_key(key: str | None, text: str) -> bool:
    """An ID-shaped value under "value" or "id" that no recognizer typed is still an identifier."""
    if not key or normalize_key(key) not in GENERIC_ID_KEYS:
        return False
    value = text.strip()
    return bool(_ID_SHAPED.fullmatch(value)) and sum(c.isdigit() for c in value) >= 3 and not re.fullmatch(
        r"\d+\.\d+", value)
