//! The demo: a seeded generator of realistic synthetic FHIR R4 resources (Patient, Encounter,
//! Observation with `value[x]` variety, Condition, ExplanationOfBenefit with nested arrays,
//! extensions and primitive extensions), and a throw-away ES384 key pair for the demo client.
//! All names, codes and values are made up here; nothing is copied from any real dataset.

use std::io::Write as _;
use std::path::Path;

use base64::Engine as _;
use serde_json::{Value, json};

/// A tiny deterministic PRNG (xorshift64*), so the same seed gives the same data everywhere.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const GIVEN: &[&str] = &[
    "Ada", "Bram", "Chiara", "Dmitri", "Esme", "Farid", "Greta", "Hiro", "Ines", "Jonas", "Kaja",
    "Luis",
];
const FAMILY: &[&str] = &[
    "Okafor",
    "Lindqvist",
    "Moreau",
    "Tanaka",
    "Novak",
    "Reyes",
    "Haddad",
    "Schmidt",
    "Kowalski",
    "Nakamura",
];
const CITIES: &[(&str, &str)] = &[
    ("Springfield", "IL"),
    ("Riverton", "WY"),
    ("Fairview", "OR"),
    ("Lakewood", "CO"),
];
const CONDITIONS: &[(&str, &str)] = &[
    ("44054006", "Diabetes mellitus type 2"),
    ("38341003", "Hypertensive disorder"),
    ("195967001", "Asthma"),
    ("35489007", "Depressive disorder"),
    ("55822004", "Hyperlipidemia"),
];
const LAB: &[(&str, &str, &str, f64, f64)] = &[
    (
        "2339-0",
        "Glucose [Mass/volume] in Blood",
        "mg/dL",
        70.0,
        180.0,
    ),
    (
        "4548-4",
        "Hemoglobin A1c/Hemoglobin.total in Blood",
        "%",
        4.5,
        11.0,
    ),
    (
        "2093-3",
        "Cholesterol [Mass/volume] in Serum or Plasma",
        "mg/dL",
        120.0,
        280.0,
    ),
    ("29463-7", "Body weight", "kg", 45.0, 130.0),
];

fn date(rng: &mut Rng, from_year: u64, years: u64) -> String {
    format!(
        "{}-{:02}-{:02}",
        from_year + rng.below(years),
        1 + rng.below(12),
        1 + rng.below(28)
    )
}

fn patient(rng: &mut Rng, id: &str) -> Value {
    let (city, state) = *rng.pick(CITIES);
    let mut p = json!({
        "resourceType": "Patient",
        "id": id,
        "meta": {"lastUpdated": "2025-06-01T12:00:00Z", "profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"]},
        "extension": [{
            "url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race",
            "extension": [
                {"url": "ombCategory", "valueCoding": {"system": "urn:oid:2.16.840.1.113883.6.238", "code": "2106-3", "display": "White"}},
                {"url": "text", "valueString": "White"}
            ]
        }, {
            "url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex",
            "valueCode": if rng.chance(50) { "F" } else { "M" }
        }],
        "identifier": [{"system": "urn:example:mrn", "value": format!("MRN{:06}", rng.below(1_000_000))}],
        "name": [{"use": "official", "family": rng.pick(FAMILY), "given": [rng.pick(GIVEN), rng.pick(GIVEN)]}],
        "gender": if rng.chance(50) { "female" } else { "male" },
        "birthDate": date(rng, 1940, 70),
        "address": [{"line": [format!("{} Elm Street", 1 + rng.below(999))], "city": city, "state": state, "postalCode": format!("{:05}", rng.below(99_999))}],
        "telecom": [{"system": "phone", "value": format!("555-{:04}", rng.below(10_000)), "use": "home"}]
    });
    if rng.chance(30) {
        // A primitive extension: birthDate's exact time of birth.
        p["_birthDate"] = json!({"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime", "valueDateTime": "1970-01-01T08:30:00Z"}]});
    }
    if rng.chance(10) {
        p["deceasedBoolean"] = json!(true);
    } else if rng.chance(5) {
        p["deceasedDateTime"] = json!(format!("{}T00:00:00Z", date(rng, 2020, 5)));
    }
    p
}

fn observation(rng: &mut Rng, id: &str, pid: &str, enc: &str) -> Value {
    let mut o = json!({
        "resourceType": "Observation",
        "id": id,
        "status": "final",
        "subject": {"reference": format!("Patient/{pid}")},
        "encounter": {"reference": format!("Encounter/{enc}")},
        "effectiveDateTime": format!("{}T{:02}:15:00Z", date(rng, 2018, 7), rng.below(24)),
    });
    match rng.below(5) {
        0 | 1 => {
            let (code, display, unit, lo, hi) = *rng.pick(LAB);
            let v = lo + (hi - lo) * (rng.below(1000) as f64 / 1000.0);
            o["category"] = json!([{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}]);
            o["code"] = json!({"coding": [{"system": "http://loinc.org", "code": code, "display": display}], "text": display});
            o["valueQuantity"] = json!({"value": (v * 10.0).round() / 10.0, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit});
        }
        2 => {
            o["category"] = json!([{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}]);
            o["code"] = json!({"coding": [{"system": "http://loinc.org", "code": "85354-9", "display": "Blood pressure panel"}]});
            o["component"] = json!([
                {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6", "display": "Systolic blood pressure"}]},
                 "valueQuantity": {"value": 100 + rng.below(60), "unit": "mm[Hg]"}},
                {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4", "display": "Diastolic blood pressure"}]},
                 "valueQuantity": {"value": 60 + rng.below(40), "unit": "mm[Hg]"}}
            ]);
        }
        3 => {
            o["code"] = json!({"coding": [{"system": "http://loinc.org", "code": "72166-2", "display": "Tobacco smoking status"}]});
            o["valueCodeableConcept"] = json!({"coding": [{"system": "http://snomed.info/sct", "code": "266919005", "display": "Never smoker"}]});
        }
        _ => {
            o["code"] = json!({"coding": [{"system": "http://loinc.org", "code": "8302-2", "display": "Body height"}]});
            if rng.chance(50) {
                o["valueString"] = json!("not measured, patient declined");
            } else {
                o["valueBoolean"] = json!(rng.chance(50));
                o["_status"] = json!({"extension": [{"url": "http://example.org/fhir/StructureDefinition/verified-by", "valueString": "nurse"}]});
            }
        }
    }
    o
}

fn eob(rng: &mut Rng, id: &str, pid: &str, enc: &str) -> Value {
    let items: Vec<Value> = (1..=1 + rng.below(3))
        .map(|seq| {
            let charge = 50 + rng.below(900);
            json!({
                "sequence": seq,
                "productOrService": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": format!("99{:03}", 200 + rng.below(300))}]},
                "encounter": [{"reference": format!("Encounter/{enc}")}],
                "net": {"value": charge, "currency": "USD"},
                "adjudication": [
                    {"category": {"coding": [{"code": "submitted"}]}, "amount": {"value": charge, "currency": "USD"}},
                    {"category": {"coding": [{"code": "benefit"}]}, "amount": {"value": charge * 8 / 10, "currency": "USD"}}
                ]
            })
        })
        .collect();
    json!({
        "resourceType": "ExplanationOfBenefit",
        "id": id,
        "status": "active",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]},
        "use": "claim",
        "patient": {"reference": format!("Patient/{pid}")},
        "created": format!("{}T10:00:00Z", date(rng, 2018, 7)),
        "insurer": {"display": "Example Health Plan"},
        "provider": {"display": "Example Clinic"},
        "outcome": "complete",
        "insurance": [{"focal": true, "coverage": {"display": "Example Coverage"}}],
        "item": items,
        "total": [{"category": {"coding": [{"code": "submitted"}]}, "amount": {"value": 100 + rng.below(2000), "currency": "USD"}}]
    })
}

/// Write `{Type}.ndjson` files for `patients` synthetic patients into `dir`, deterministically
/// from `seed`. Returns the number of resources written.
///
/// # Errors
/// On I/O failure.
pub fn generate(dir: &Path, patients: usize, seed: u64) -> std::io::Result<u64> {
    std::fs::create_dir_all(dir)?;
    let mut rng = Rng(seed.max(1));
    let open = |t: &str| {
        std::fs::File::create(dir.join(format!("{t}.ndjson"))).map(std::io::BufWriter::new)
    };
    let (mut pf, mut ef, mut of, mut cf, mut bf) = (
        open("Patient")?,
        open("Encounter")?,
        open("Observation")?,
        open("Condition")?,
        open("ExplanationOfBenefit")?,
    );
    let mut n = 0u64;
    let mut write = |f: &mut std::io::BufWriter<std::fs::File>, v: &Value| -> std::io::Result<()> {
        n += 1;
        writeln!(f, "{v}")
    };
    for p in 0..patients {
        let pid = format!("pat-{p:05}");
        write(&mut pf, &patient(&mut rng, &pid))?;
        for e in 0..1 + rng.below(3) {
            let eid = format!("enc-{p:05}-{e}");
            let start = date(&mut rng, 2018, 7);
            write(
                &mut ef,
                &json!({
                    "resourceType": "Encounter", "id": eid, "status": "finished",
                    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": if rng.chance(80) { "AMB" } else { "EMER" }},
                    "type": [{"coding": [{"system": "http://snomed.info/sct", "code": "185349003", "display": "Encounter for check up"}]}],
                    "subject": {"reference": format!("Patient/{pid}")},
                    "period": {"start": format!("{start}T09:00:00Z"), "end": format!("{start}T09:40:00Z")}
                }),
            )?;
            for o in 0..1 + rng.below(4) {
                write(
                    &mut of,
                    &observation(&mut rng, &format!("obs-{p:05}-{e}-{o}"), &pid, &eid),
                )?;
            }
            write(
                &mut bf,
                &eob(&mut rng, &format!("eob-{p:05}-{e}"), &pid, &eid),
            )?;
        }
        for c in 0..rng.below(3) {
            let (code, display) = *rng.pick(CONDITIONS);
            write(
                &mut cf,
                &json!({
                    "resourceType": "Condition", "id": format!("cond-{p:05}-{c}"),
                    "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
                    "code": {"coding": [{"system": "http://snomed.info/sct", "code": code, "display": display}], "text": display},
                    "subject": {"reference": format!("Patient/{pid}")},
                    "onsetDateTime": format!("{}T00:00:00Z", date(&mut rng, 2000, 20))
                }),
            )?;
        }
    }
    for f in [&mut pf, &mut ef, &mut of, &mut cf, &mut bf] {
        f.flush()?;
    }
    Ok(n)
}

/// A throw-away ES384 key pair made at run time for the demo client.
#[derive(Clone)]
pub struct DemoKey {
    /// PKCS#8 PEM of the private key.
    pub private_pem: String,
    /// The public key as a JWKS with `kid` [`DemoKey::KID`].
    pub jwks: Value,
}

impl std::fmt::Debug for DemoKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoKey")
            .field("jwks", &self.jwks)
            .finish_non_exhaustive()
    }
}

impl DemoKey {
    /// The key id registered with the demo server.
    pub const KID: &'static str = "flatfhir-demo-es384";
    /// The demo client's id.
    pub const CLIENT_ID: &'static str = "flatfhir-demo";

    /// Generate a fresh P-384 key pair.
    ///
    /// # Panics
    /// When the system random source fails.
    #[must_use]
    pub fn generate() -> Self {
        use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
        let pair =
            EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING).expect("key generation");
        let der = pair.to_pkcs8v1().expect("PKCS#8 encoding");
        let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        let point = pair.public_key().as_ref();
        // Uncompressed point: 0x04 || x (48 bytes) || y (48 bytes).
        let (x, y) = point[1..].split_at(48);
        let enc = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let jwks = json!({"keys": [{"kty": "EC", "crv": "P-384", "alg": "ES384", "use": "sig",
                                    "kid": Self::KID, "x": enc(x), "y": enc(y)}]});
        Self {
            private_pem: pem,
            jwks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The generator is deterministic: seed 42 reproduces the committed sample exactly.
    #[test]
    fn seed_reproduces_the_committed_sample() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(generate(dir.path(), 5, 42).unwrap(), 59);
        let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/demo/sample");
        for t in [
            "Patient",
            "Encounter",
            "Observation",
            "Condition",
            "ExplanationOfBenefit",
        ] {
            let name = format!("{t}.ndjson");
            let got = std::fs::read_to_string(dir.path().join(&name)).unwrap();
            let want = std::fs::read_to_string(sample.join(&name)).unwrap();
            // Compared as JSON: key order depends on whether a build unifies serde_json's
            // `preserve_order` feature in.
            let parse = |s: &str| {
                s.lines()
                    .map(|l| serde_json::from_str::<Value>(l).unwrap())
                    .collect::<Vec<_>>()
            };
            assert_eq!(parse(&got), parse(&want), "{name}");
            for line in got.lines() {
                let v: Value = serde_json::from_str(line).unwrap();
                assert_eq!(v["resourceType"], t);
            }
        }
    }

    #[test]
    fn demo_key_signs_and_verifies() {
        let key = DemoKey::generate();
        assert!(key.private_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let jwk: jsonwebtoken::jwk::Jwk =
            serde_json::from_value(key.jwks["keys"][0].clone()).unwrap();
        let enc = jsonwebtoken::EncodingKey::from_ec_pem(key.private_pem.as_bytes()).unwrap();
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES384),
            &json!({"sub": "x", "exp": 4_000_000_000u64}),
            &enc,
        )
        .unwrap();
        let dec = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES384);
        v.required_spec_claims.clear();
        jsonwebtoken::decode::<Value>(&token, &dec, &v).unwrap();
    }
}
