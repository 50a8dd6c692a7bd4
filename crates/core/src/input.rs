//! Finding input files and grouping them by resource type: directory expansion, file-name
//! patterns of real Bulk Data exports, natural ordering. It does not read file contents
//! except to sniff the types of files whose names do not say.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use crate::bundle::{self, BundleInputs, BundleMode, BundleOptions};
use crate::error::{Error, Result};
use crate::reader::{LineReader, ReadOptions};
use crate::scan::{self, Reason, Scalar, Visitor};

/// One input file and which of its lines belong to the group it is listed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputFile {
    /// Path to the file.
    pub path: PathBuf,
    /// `true` when the resource type comes from the file name: every line must be of that type.
    /// `false` when the type was sniffed from content: the file may hold several types and this
    /// group takes only its own lines.
    pub typed_by_name: bool,
    /// For a sniffed file, whether this group reports the file's lines that have no readable
    /// type (bad JSON, missing `resourceType`). Exactly one group per sniffed file does, so
    /// such lines are reported once.
    pub reports_untyped: bool,
}

/// All files of one resource type, in reading order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeGroup {
    /// The FHIR resource type, e.g. `Observation`.
    pub resource_type: String,
    /// Files in natural order of their names.
    pub files: Vec<InputFile>,
}

/// The result of expanding and grouping the inputs.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// One group per resource type, sorted by type name.
    pub groups: Vec<TypeGroup>,
    /// Files in the given directories that were not considered input (e.g. `manifest.json`).
    pub skipped: Vec<PathBuf>,
    /// Sniffed files that held no resource at all.
    pub empty: Vec<PathBuf>,
    /// Bundle files unpacked into the groups' temporary files (kept alive with the plan).
    pub bundles: Option<std::sync::Arc<BundleInputs>>,
    /// Bundle files left packed, for [`crate::convert_bundles`] (only from
    /// [`plan_packed`], when every input file is a Bundle file; `groups` is empty then).
    pub packed: Vec<PathBuf>,
}

/// Is this file name an NDJSON input (`.ndjson`, `.ndjson.gz`, `.jsonl`, `.jsonl.gz`)?
pub fn is_ndjson_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let base = lower.strip_suffix(".gz").unwrap_or(&lower);
    base.ends_with(".ndjson") || base.ends_with(".jsonl")
}

/// The resource type a file name names, if any: `Patient.ndjson`, `1.Observation.ndjson`,
/// `Observation.000.ndjson`, `Observation-1-2.ndjson`, `export_Condition.ndjson.gz`.
pub fn type_from_file_name(name: &str) -> Option<&'static str> {
    name.split(['.', '_', '-', ' ']).find_map(|token| {
        RESOURCE_TYPES
            .binary_search(&token)
            .ok()
            .map(|i| RESOURCE_TYPES[i])
    })
}

/// Compares names so that embedded numbers order by value: `2.x` < `10.x`, `a.000` < `a.001`.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    loop {
        match (x.first(), y.first()) {
            (None, None) => return a.cmp(b),
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(c), Some(d)) if c.is_ascii_digit() && d.is_ascii_digit() => {
                let nx = x.iter().take_while(|c| c.is_ascii_digit()).count();
                let ny = y.iter().take_while(|c| c.is_ascii_digit()).count();
                let (dx, dy) = (&x[..nx], &y[..ny]);
                let tx = trim_zeros(dx);
                let ty = trim_zeros(dy);
                let ord = tx.len().cmp(&ty.len()).then_with(|| tx.cmp(ty));
                if ord != Ordering::Equal {
                    return ord;
                }
                x = &x[nx..];
                y = &y[ny..];
            }
            (Some(c), Some(d)) => {
                if c != d {
                    return c.cmp(d);
                }
                x = &x[1..];
                y = &y[1..];
            }
        }
    }
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let n = d.iter().take_while(|&&c| c == b'0').count();
    &d[n.min(d.len().saturating_sub(1))..]
}

/// Expands files and directories into type groups.
///
/// Directories contribute their `*.ndjson`, `*.ndjson.gz`, `*.jsonl` files (recursively, but
/// not into `error/` or `deleted/`, which hold OperationOutcomes and deletion Bundles in the
/// Bulk Data layout, nor `_rejected/`); files named explicitly are always read. Files whose name
/// names no resource type are sniffed: each resource type found in them gets the file.
pub fn plan(inputs: &[PathBuf], read: &ReadOptions) -> Result<Plan> {
    plan_with(inputs, read, &BundleOptions::default())
}

/// [`plan`], with Bundle files (see [`BundleMode`]) unpacked into per-type temporary NDJSON
/// files that join the groups of their types (after the NDJSON files of the type).
pub fn plan_with(inputs: &[PathBuf], read: &ReadOptions, bundles: &BundleOptions) -> Result<Plan> {
    plan_inner(inputs, read, bundles, false)
}

/// [`plan_with`], except that when every input file is a Bundle file, nothing is unpacked:
/// the files are listed in [`Plan::packed`] (in reading order), for
/// [`crate::convert_bundles`] to convert while it unpacks them. With NDJSON files among the
/// inputs it is [`plan_with`].
pub fn plan_packed(
    inputs: &[PathBuf],
    read: &ReadOptions,
    bundles: &BundleOptions,
) -> Result<Plan> {
    plan_inner(inputs, read, bundles, true)
}

fn plan_inner(
    inputs: &[PathBuf],
    read: &ReadOptions,
    bundles: &BundleOptions,
    leave_packed: bool,
) -> Result<Plan> {
    let mut files = Vec::new();
    let mut plan = Plan::default();
    let mut json_in_dirs = Vec::new();
    for input in inputs {
        if let Some(url) = crate::remote::url_of(input) {
            remote_input(url, &mut files, &mut plan.skipped, &mut json_in_dirs)?;
            continue;
        }
        let meta = std::fs::metadata(input).map_err(|e| Error::Input {
            path: input.clone(),
            reason: format!("cannot open: {e}"),
        })?;
        if meta.is_dir() {
            walk_dir(input, &mut files, &mut plan.skipped, &mut json_in_dirs)?;
        } else {
            files.push(input.clone());
        }
    }
    // A `*.json` file found in a directory is read when it holds a Bundle.
    for path in json_in_dirs {
        if bundles.mode != BundleMode::Keep && bundle::starts_as_bundle(&path) {
            files.push(path);
        } else {
            plan.skipped.push(path);
        }
    }
    files.sort_by(|a, b| natural_cmp(&file_name(a), &file_name(b)).then_with(|| a.cmp(b)));
    files.dedup();

    let mut groups: std::collections::BTreeMap<String, Vec<InputFile>> = Default::default();
    let mut bundle_files = Vec::new();
    for path in files {
        let name = file_name(&path);
        let unpack = match bundles.mode {
            BundleMode::Keep => false,
            BundleMode::Unpack => true,
            BundleMode::Auto => {
                bundle::is_json_name(&name)
                    || (!is_ndjson_name(&name)
                        && type_from_file_name(&name).is_none()
                        && bundle::starts_as_bundle(&path))
            }
        };
        if unpack {
            bundle_files.push(path);
            continue;
        }
        if let Some(t) = type_from_file_name(&name) {
            groups.entry(t.to_string()).or_default().push(InputFile {
                path,
                typed_by_name: true,
                reports_untyped: false,
            });
            continue;
        }
        let types = sniff_types(&path, read)?;
        if types.is_empty() {
            plan.empty.push(path);
            continue;
        }
        for (i, t) in types.into_iter().enumerate() {
            groups.entry(t).or_default().push(InputFile {
                path: path.clone(),
                typed_by_name: false,
                reports_untyped: i == 0,
            });
        }
    }
    let mut unplaced = None;
    if leave_packed && groups.is_empty() && !bundle_files.is_empty() {
        plan.packed = bundle_files;
        return Ok(plan);
    }
    if !bundle_files.is_empty() {
        let (typed, bad, inputs) = bundle::unpack(&bundle_files, bundles, read.max_line_bytes)?;
        for (t, path) in typed {
            groups.entry(t).or_default().push(InputFile {
                path,
                typed_by_name: true,
                reports_untyped: false,
            });
        }
        if groups.is_empty() {
            plan.empty.extend(bundle_files);
        }
        unplaced = bad;
        plan.bundles = Some(std::sync::Arc::new(inputs));
    }
    // Entries that could not become a resource: every line is reported by the first group.
    if let (Some(path), Some((_, files))) = (unplaced, groups.iter_mut().next()) {
        files.push(InputFile {
            path,
            typed_by_name: true,
            reports_untyped: false,
        });
    }
    plan.groups = groups
        .into_iter()
        .map(|(resource_type, files)| TypeGroup {
            resource_type,
            files,
        })
        .collect();
    Ok(plan)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A URL: one object, or a prefix listed like a directory (the rules of [`walk_dir`] applied
/// to the keys below it).
fn remote_input(
    url: &str,
    files: &mut Vec<PathBuf>,
    skipped: &mut Vec<PathBuf>,
    json: &mut Vec<PathBuf>,
) -> Result<()> {
    use crate::remote::{self, RemoteStat};
    let input_err = |reason: String| Error::Input {
        path: url.into(),
        reason,
    };
    match remote::stat(url).map_err(|e| input_err(format!("cannot open: {e}")))? {
        RemoteStat::Object(_) => files.push(url.into()),
        RemoteStat::Prefix => {
            let objects = remote::list(url).map_err(|e| input_err(format!("cannot list: {e}")))?;
            for o in objects {
                let mut parts: Vec<&str> = o.relative.split('/').collect();
                let name = parts.pop().unwrap_or_default();
                let hidden_dir = parts
                    .iter()
                    .any(|d| matches!(*d, "error" | "deleted" | "_rejected") || d.starts_with('.'));
                let path = PathBuf::from(&o.url);
                if hidden_dir || name.is_empty() {
                    continue;
                } else if is_ndjson_name(name) {
                    files.push(path);
                } else if bundle::is_json_name(name)
                    && name != "manifest.json"
                    && !name.starts_with('.')
                {
                    json.push(path);
                } else {
                    skipped.push(path);
                }
            }
        }
    }
    Ok(())
}

fn walk_dir(
    dir: &Path,
    files: &mut Vec<PathBuf>,
    skipped: &mut Vec<PathBuf>,
    json: &mut Vec<PathBuf>,
) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::Input {
        path: dir.to_path_buf(),
        reason: format!("cannot list directory: {e}"),
    })?;
    let mut paths: Vec<PathBuf> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::Input {
            path: dir.to_path_buf(),
            reason: e.to_string(),
        })?;
        paths.push(entry.path());
    }
    paths.sort();
    for path in paths {
        let name = file_name(&path);
        if path.is_dir() {
            if !matches!(name.as_str(), "error" | "deleted" | "_rejected") && !name.starts_with('.')
            {
                walk_dir(&path, files, skipped, json)?;
            }
        } else if is_ndjson_name(&name) {
            files.push(path);
        } else if bundle::is_json_name(&name) && name != "manifest.json" && !name.starts_with('.') {
            json.push(path);
        } else {
            skipped.push(path);
        }
    }
    Ok(())
}

/// Why a file holds no NDJSON input, for a message: it is empty, gzip without resources, a
/// pretty-printed JSON document or FHIR Bundle, CSV, or lines without a `resourceType`.
/// Reads at most the first 64 KiB.
pub fn why_not_ndjson(path: &Path) -> String {
    use std::io::Read as _;
    let mut head = Vec::new();
    if let Err(e) =
        crate::remote::open(path, 0).and_then(|f| f.take(64 << 10).read_to_end(&mut head))
    {
        return format!("cannot read it: {e}");
    }
    if head.starts_with(&[0x1f, 0x8b]) {
        return "it is gzip-compressed, and none of its lines is a FHIR resource (a JSON object \
                with a resourceType)"
            .into();
    }
    let text = String::from_utf8_lossy(&head);
    let t = text.trim_start_matches('\u{feff}').trim_start();
    if t.is_empty() {
        return "it is empty".into();
    }
    let first = t.lines().next().unwrap_or("").trim();
    let name = path.display();
    if t.starts_with('{') || t.starts_with('[') {
        let one_line_objects = first.starts_with('{') && first.ends_with('}');
        if one_line_objects {
            return "its lines are JSON objects, but none has a resourceType; FHIR NDJSON holds \
                    one resource (with its resourceType) per line"
                .into();
        }
        if is_bundle(t) {
            return "it is a FHIR Bundle spread over several lines, read as NDJSON because of \
                    its name or --bundles keep; flatfhir converts a Bundle's entries when the \
                    file is named *.json or *.json.gz, or with --bundles unpack"
                .to_string();
        }
        let how = if t.starts_with('[') { ".[]" } else { "." };
        return format!(
            "it looks like a pretty-printed (multi-line) JSON document, not NDJSON (one \
             resource per line). Rewrite it with one resource per line first: \
             jq -c '{how}' {name} > resources.ndjson"
        );
    }
    if first.contains([',', '\t', ';']) {
        return "it looks like CSV or another text table, not NDJSON (one FHIR resource, a JSON \
                object, per line)"
            .into();
    }
    "none of its lines is a FHIR resource (a JSON object with a resourceType), so it is not \
     NDJSON"
        .into()
}

/// Whether a JSON text's `resourceType` member (the first one) is `Bundle`.
fn is_bundle(text: &str) -> bool {
    let Some(at) = text.find("\"resourceType\"") else {
        return false;
    };
    let rest = text[at + "\"resourceType\"".len()..].trim_start();
    rest.strip_prefix(':')
        .is_some_and(|r| r.trim_start().starts_with("\"Bundle\""))
}

/// Finds the distinct resource types in a file (in order of first appearance, then sorted
/// for a stable plan). Lines that cannot be read are left for the conversion to report.
fn sniff_types(path: &Path, read: &ReadOptions) -> Result<Vec<String>> {
    let mut reader = LineReader::open(path, read)?;
    let mut types: Vec<String> = Vec::new();
    let mut scratch = String::new();
    while let Some(chunk) = reader.next_chunk()? {
        for line in chunk.lines() {
            let Ok(text) = std::str::from_utf8(line.bytes) else {
                continue;
            };
            if let Some(t) = resource_type_of(text, &mut scratch)
                && !types.contains(&t)
            {
                types.push(t);
            }
        }
    }
    types.sort();
    Ok(types)
}

/// The root `resourceType` of a line, when the line is a valid JSON object that has one.
pub(crate) fn resource_type_of(line: &str, scratch: &mut String) -> Option<String> {
    struct Find(Option<String>, bool);
    impl Visitor for Find {
        fn enter_key(&mut self, depth: usize, key: &str) -> Result<bool, Reason> {
            self.1 = depth == 1 && key == "resourceType";
            Ok(self.1)
        }
        fn enter_index(&mut self, _: usize) -> Result<(), Reason> {
            Ok(())
        }
        fn leave(&mut self) {}
        fn scalar(&mut self, value: Scalar<'_>) -> Result<(), Reason> {
            if let (true, Scalar::Str(s)) = (self.1, value) {
                self.0 = Some(s.to_string());
            }
            Ok(())
        }
    }
    let mut f = Find(None, false);
    scan::walk(line, &mut f, scratch).ok()?;
    f.0
}

/// FHIR R4 and R5 resource type names, sorted (for binary search).
pub static RESOURCE_TYPES: &[&str] = &[
    "Account",
    "ActivityDefinition",
    "ActorDefinition",
    "AdministrableProductDefinition",
    "AdverseEvent",
    "AllergyIntolerance",
    "Appointment",
    "AppointmentResponse",
    "ArtifactAssessment",
    "AuditEvent",
    "Basic",
    "Binary",
    "BiologicallyDerivedProduct",
    "BiologicallyDerivedProductDispense",
    "BodyStructure",
    "Bundle",
    "CapabilityStatement",
    "CarePlan",
    "CareTeam",
    "CatalogEntry",
    "ChargeItem",
    "ChargeItemDefinition",
    "Citation",
    "Claim",
    "ClaimResponse",
    "ClinicalImpression",
    "ClinicalUseDefinition",
    "CodeSystem",
    "Communication",
    "CommunicationRequest",
    "CompartmentDefinition",
    "Composition",
    "ConceptMap",
    "Condition",
    "ConditionDefinition",
    "Consent",
    "Contract",
    "Coverage",
    "CoverageEligibilityRequest",
    "CoverageEligibilityResponse",
    "DetectedIssue",
    "Device",
    "DeviceAssociation",
    "DeviceDefinition",
    "DeviceDispense",
    "DeviceMetric",
    "DeviceRequest",
    "DeviceUsage",
    "DeviceUseStatement",
    "DiagnosticReport",
    "DocumentManifest",
    "DocumentReference",
    "EffectEvidenceSynthesis",
    "Encounter",
    "EncounterHistory",
    "Endpoint",
    "EnrollmentRequest",
    "EnrollmentResponse",
    "EpisodeOfCare",
    "EventDefinition",
    "Evidence",
    "EvidenceReport",
    "EvidenceVariable",
    "ExampleScenario",
    "ExplanationOfBenefit",
    "FamilyMemberHistory",
    "Flag",
    "FormularyItem",
    "GenomicStudy",
    "Goal",
    "GraphDefinition",
    "Group",
    "GuidanceResponse",
    "HealthcareService",
    "ImagingSelection",
    "ImagingStudy",
    "Immunization",
    "ImmunizationEvaluation",
    "ImmunizationRecommendation",
    "ImplementationGuide",
    "Ingredient",
    "InsurancePlan",
    "InventoryItem",
    "InventoryReport",
    "Invoice",
    "Library",
    "Linkage",
    "List",
    "Location",
    "ManufacturedItemDefinition",
    "Measure",
    "MeasureReport",
    "Media",
    "Medication",
    "MedicationAdministration",
    "MedicationDispense",
    "MedicationKnowledge",
    "MedicationRequest",
    "MedicationStatement",
    "MedicinalProduct",
    "MedicinalProductAuthorization",
    "MedicinalProductContraindication",
    "MedicinalProductDefinition",
    "MedicinalProductIndication",
    "MedicinalProductIngredient",
    "MedicinalProductInteraction",
    "MedicinalProductManufactured",
    "MedicinalProductPackaged",
    "MedicinalProductPharmaceutical",
    "MedicinalProductUndesirableEffect",
    "MessageDefinition",
    "MessageHeader",
    "MolecularSequence",
    "NamingSystem",
    "NutritionIntake",
    "NutritionOrder",
    "NutritionProduct",
    "Observation",
    "ObservationDefinition",
    "OperationDefinition",
    "OperationOutcome",
    "Organization",
    "OrganizationAffiliation",
    "PackagedProductDefinition",
    "Parameters",
    "Patient",
    "PaymentNotice",
    "PaymentReconciliation",
    "Permission",
    "Person",
    "PlanDefinition",
    "Practitioner",
    "PractitionerRole",
    "Procedure",
    "Provenance",
    "Questionnaire",
    "QuestionnaireResponse",
    "RegulatedAuthorization",
    "RelatedPerson",
    "RequestGroup",
    "RequestOrchestration",
    "Requirements",
    "ResearchDefinition",
    "ResearchElementDefinition",
    "ResearchStudy",
    "ResearchSubject",
    "RiskAssessment",
    "RiskEvidenceSynthesis",
    "Schedule",
    "SearchParameter",
    "ServiceRequest",
    "Slot",
    "Specimen",
    "SpecimenDefinition",
    "StructureDefinition",
    "StructureMap",
    "Subscription",
    "SubscriptionStatus",
    "SubscriptionTopic",
    "Substance",
    "SubstanceDefinition",
    "SubstanceNucleicAcid",
    "SubstancePolymer",
    "SubstanceProtein",
    "SubstanceReferenceInformation",
    "SubstanceSourceMaterial",
    "SubstanceSpecification",
    "SupplyDelivery",
    "SupplyRequest",
    "Task",
    "TerminologyCapabilities",
    "TestPlan",
    "TestReport",
    "TestScript",
    "Transport",
    "ValueSet",
    "VerificationResult",
    "VisionPrescription",
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Each kind of file that holds no NDJSON input gets its own reason.
    #[test]
    fn why_a_file_is_not_ndjson() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("", "it is empty"),
            (
                "{\n  \"resourceType\" : \"Bundle\",\n  \"entry\": []\n}\n",
                "--bundles unpack",
            ),
            ("{\n  \"a\": 1\n}\n", "jq -c '.'"),
            ("[\n  {\"resourceType\": \"Patient\"}\n]\n", "jq -c '.[]'"),
            ("{\"a\":1}\n{\"b\":2}\n", "none has a resourceType"),
            ("id;name\n1;a\n", "CSV"),
            ("hello\n", "none of its lines is a FHIR resource"),
        ];
        for (i, (text, want)) in cases.iter().enumerate() {
            let p = dir.path().join(format!("f{i}"));
            std::fs::write(&p, text).unwrap();
            let why = why_not_ndjson(&p);
            assert!(why.contains(want), "{text:?}: {why}");
        }
        assert!(why_not_ndjson(&dir.path().join("missing")).starts_with("cannot read it"));
    }

    #[test]
    fn resource_types_are_sorted_for_binary_search() {
        assert!(RESOURCE_TYPES.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn file_names_name_types() {
        for (name, t) in [
            ("Patient.ndjson", Some("Patient")),
            ("1.Observation.ndjson", Some("Observation")),
            ("Observation.000.ndjson.gz", Some("Observation")),
            ("Observation-1-2.ndjson", Some("Observation")),
            ("abc123_Condition.ndjson", Some("Condition")),
            ("data.ndjson", None),
            ("patients.ndjson", None),
        ] {
            assert_eq!(type_from_file_name(name), t, "{name}");
        }
    }

    #[test]
    fn natural_order() {
        let mut v = vec![
            "10.Observation.ndjson",
            "2.Observation.ndjson",
            "1.Observation.ndjson",
            "Observation.001.ndjson",
            "Observation.000.ndjson",
        ];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            v,
            [
                "1.Observation.ndjson",
                "2.Observation.ndjson",
                "10.Observation.ndjson",
                "Observation.000.ndjson",
                "Observation.001.ndjson"
            ]
        );
    }

    #[test]
    fn ndjson_names() {
        assert!(
            is_ndjson_name("a.ndjson")
                && is_ndjson_name("a.NDJSON.gz")
                && is_ndjson_name("a.jsonl")
        );
        assert!(!is_ndjson_name("manifest.json") && !is_ndjson_name("README.md"));
    }
}
