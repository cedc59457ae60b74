//! Label sets and prompt templates: what zero-shot CLIP chooses between, and how each choice is
//! put into words.
//!
//! A [`Label`] has a name (what is reported), one or more wordings (what is put into the
//! templates; several wordings are a synonym ensemble), and the dataset classes it stands for
//! (for reduced sets that merge classes, such as `eurosat-reduced`).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub name: String,
    pub wordings: Vec<String>,
    /// Dataset classes this label stands for; empty means just its own name.
    pub classes: Vec<String>,
}

impl Label {
    pub fn plain(name: &str) -> Self {
        Self {
            name: name.to_string(),
            wordings: vec![name.to_string()],
            classes: vec![],
        }
    }

    fn worded(name: &str, wordings: &[&str], classes: &[&str]) -> Self {
        Self {
            name: name.to_string(),
            wordings: wordings.iter().map(|s| s.to_string()).collect(),
            classes: classes.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// An ordered, non-empty set of labels with unique names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSet {
    /// The preset name, file path or `inline` it came from.
    pub source: String,
    pub labels: Vec<Label>,
}

/// The names `--labels` accepts as presets.
pub const PRESETS: &[&str] = &[
    "eurosat",
    "eurosat-folders",
    "eurosat-reduced",
    "xview",
    "rsicd",
    "describe",
];

/// EuroSAT's class folders with the wordings CLIP's paper used for them.
const EUROSAT: &[(&str, &str)] = &[
    ("AnnualCrop", "annual crop land"),
    ("Forest", "forest"),
    ("HerbaceousVegetation", "brushland or shrubland"),
    ("Highway", "highway or road"),
    ("Industrial", "industrial buildings or commercial buildings"),
    ("Pasture", "pasture land"),
    ("PermanentCrop", "permanent crop land"),
    (
        "Residential",
        "residential buildings or homes or apartments",
    ),
    ("River", "river"),
    ("SeaLake", "lake or sea"),
];

/// RSICD's 30 scene classes (the names of its class lists), with readable wordings.
const RSICD: &[(&str, &str)] = &[
    ("Airport", "airport"),
    ("BareLand", "bare land"),
    ("BaseballField", "baseball field"),
    ("Beach", "beach"),
    ("Bridge", "bridge"),
    ("Center", "city center"),
    ("Church", "church"),
    ("Commercial", "commercial area"),
    ("DenseResidential", "dense residential area"),
    ("Desert", "desert"),
    ("Farmland", "farmland"),
    ("Forest", "forest"),
    ("Industrial", "industrial area"),
    ("Meadow", "meadow"),
    ("MediumResidential", "medium residential area"),
    ("Mountain", "mountain"),
    ("Park", "park"),
    ("Parking", "parking lot"),
    ("Playground", "playground"),
    ("Pond", "pond"),
    ("Port", "port"),
    ("RailwayStation", "railway station"),
    ("Resort", "resort"),
    ("River", "river"),
    ("School", "school"),
    ("SparseResidential", "sparse residential area"),
    ("Square", "square"),
    ("Stadium", "stadium"),
    ("StorageTanks", "storage tanks"),
    ("Viaduct", "viaduct"),
];

/// xView's 60 object classes (`xview_class_labels.txt`), in type-id order.
pub const XVIEW: &[(u32, &str)] = &[
    (11, "Fixed-wing Aircraft"),
    (12, "Small Aircraft"),
    (13, "Cargo Plane"),
    (15, "Helicopter"),
    (17, "Passenger Vehicle"),
    (18, "Small Car"),
    (19, "Bus"),
    (20, "Pickup Truck"),
    (21, "Utility Truck"),
    (23, "Truck"),
    (24, "Cargo Truck"),
    (25, "Truck w/Box"),
    (26, "Truck Tractor"),
    (27, "Trailer"),
    (28, "Truck w/Flatbed"),
    (29, "Truck w/Liquid"),
    (32, "Crane Truck"),
    (33, "Railway Vehicle"),
    (34, "Passenger Car"),
    (35, "Cargo Car"),
    (36, "Flat Car"),
    (37, "Tank car"),
    (38, "Locomotive"),
    (40, "Maritime Vessel"),
    (41, "Motorboat"),
    (42, "Sailboat"),
    (44, "Tugboat"),
    (45, "Barge"),
    (47, "Fishing Vessel"),
    (49, "Ferry"),
    (50, "Yacht"),
    (51, "Container Ship"),
    (52, "Oil Tanker"),
    (53, "Engineering Vehicle"),
    (54, "Tower crane"),
    (55, "Container Crane"),
    (56, "Reach Stacker"),
    (57, "Straddle Carrier"),
    (59, "Mobile Crane"),
    (60, "Dump Truck"),
    (61, "Haul Truck"),
    (62, "Scraper/Tractor"),
    (63, "Front loader/Bulldozer"),
    (64, "Excavator"),
    (65, "Cement Mixer"),
    (66, "Ground Grader"),
    (71, "Hut/Tent"),
    (72, "Shed"),
    (73, "Building"),
    (74, "Aircraft Hangar"),
    (76, "Damaged Building"),
    (77, "Facility"),
    (79, "Construction Site"),
    (83, "Vehicle Lot"),
    (84, "Helipad"),
    (86, "Storage Tank"),
    (89, "Shipping container lot"),
    (91, "Shipping Container"),
    (93, "Pylon"),
    (94, "Tower"),
];

fn preset(name: &str) -> Option<Vec<Label>> {
    Some(match name {
        "eurosat" => EUROSAT
            .iter()
            .map(|(c, w)| Label::worded(c, &[w], &[c]))
            .collect(),
        "eurosat-folders" => EUROSAT.iter().map(|(c, _)| Label::plain(c)).collect(),
        "eurosat-reduced" => vec![
            Label::worded(
                "field",
                &["field"],
                &[
                    "AnnualCrop",
                    "PermanentCrop",
                    "Pasture",
                    "HerbaceousVegetation",
                ],
            ),
            Label::worded("forest", &["forest"], &["Forest"]),
            Label::worded("highway", &["highway"], &["Highway"]),
            Label::worded("buildings", &["buildings"], &["Residential", "Industrial"]),
            Label::worded("body of water", &["body of water"], &["River", "SeaLake"]),
        ],
        "xview" => XVIEW
            .iter()
            .map(|(_, n)| Label::worded(n, &[&n.to_lowercase().replace('/', " or ")], &[n]))
            .collect(),
        "rsicd" => RSICD
            .iter()
            .map(|(c, w)| Label::worded(c, &[w], &[c]))
            .collect(),
        // The first command a user types: land cover and scene types seen from above.
        "describe" => {
            let mut v: Vec<Label> = RSICD.iter().map(|(_, w)| Label::plain(w)).collect();
            for w in [
                "annual crop land",
                "brushland or shrubland",
                "highway or road",
                "pasture land",
                "lake or sea",
            ] {
                v.push(Label::plain(w));
            }
            v
        }
        _ => return None,
    })
}

/// The candidate `given` most likely stands for, for a "did you mean" hint: the one at the
/// least edit distance, ignoring case, when that distance is small for the name's length (at
/// most a third of it, and 1 for short names). `None` when nothing is that close.
pub fn did_you_mean<'a>(
    given: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let given = given.to_lowercase();
    let allowed = (given.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (strsim::levenshtein(&given, &c.to_lowercase()), c))
        .filter(|&(d, _)| d <= allowed)
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// The position of `given` among `names`: the name itself, else the one name equal to it
/// ignoring case; otherwise an error naming `what`, with a "did you mean" when one is close.
pub fn find_name(names: &[&str], given: &str, what: &str) -> Result<usize> {
    if let Some(i) = names.iter().position(|n| *n == given) {
        return Ok(i);
    }
    let folded: Vec<usize> = (0..names.len())
        .filter(|&i| names[i].to_lowercase() == given.to_lowercase())
        .collect();
    if let [i] = folded[..] {
        return Ok(i);
    }
    let hint = match did_you_mean(given, names.iter().copied()) {
        Some(n) => format!("; did you mean {n:?}?"),
        None => String::new(),
    };
    bail!(
        "{what} {given:?} is not in the label set ({}){hint}",
        names.join(", ")
    )
}

impl LabelSet {
    /// `--labels` value: a preset name, a file, or a comma-separated list.
    pub fn parse(spec: &str) -> Result<Self> {
        Self::parse_with(spec, true)
    }

    /// A label set from someone who may not read this machine's files (a server's client): a
    /// preset name or a comma-separated list, never a file.
    pub fn parse_inline(spec: &str) -> Result<Self> {
        Self::parse_with(spec, false)
    }

    fn parse_with(spec: &str, files: bool) -> Result<Self> {
        let spec = spec.trim();
        // Preset names are matched whatever their case: `EuroSAT` is `eurosat`.
        let lower = spec.to_ascii_lowercase();
        if let Some(labels) = preset(&lower) {
            return Self::new(&lower, labels);
        }
        let path = Path::new(spec);
        if files && path.is_file() {
            return Self::from_file(path);
        }
        if spec.contains(',') {
            let labels = spec
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(Label::plain)
                .collect();
            return Self::new("inline", labels);
        }
        let file = if files { ", a file," } else { "" };
        if spec.is_empty() {
            bail!(
                "empty label list: give a preset ({}){file} or labels separated by commas",
                PRESETS.join(", ")
            );
        }
        let file = if files {
            " nor an existing label file"
        } else {
            ""
        };
        let hint = match did_you_mean(spec, PRESETS.iter().copied()) {
            Some(p) => format!("did you mean {p}? "),
            None => String::new(),
        };
        bail!(
            "'{spec}' is not a label preset ({}){file}; {hint}inline labels are separated by \
             commas (a single label needs no zero-shot choice)",
            PRESETS.join(", ")
        )
    }

    /// One label a line: `name` or `name: wording | synonym | …`, optionally followed by
    /// `=> ClassA, ClassB` (the dataset classes the label stands for); `#` starts a comment.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read label file", path.display()))?;
        let mut labels = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let (line, classes) = match line.split_once("=>") {
                Some((l, c)) => (
                    l.trim(),
                    c.split(',')
                        .map(|c| c.trim().to_string())
                        .filter(|c| !c.is_empty())
                        .collect(),
                ),
                None => (line, vec![]),
            };
            let label = match line.split_once(':') {
                Some((name, rest)) => {
                    let wordings: Vec<String> = rest
                        .split('|')
                        .map(|w| w.trim().to_string())
                        .filter(|w| !w.is_empty())
                        .collect();
                    if name.trim().is_empty() || wordings.is_empty() {
                        bail!(
                            "{}:{}: expected `label: wording | synonym`, got {line:?}",
                            path.display(),
                            i + 1
                        );
                    }
                    Label {
                        name: name.trim().to_string(),
                        wordings,
                        classes: vec![],
                    }
                }
                None => Label::plain(line),
            };
            labels.push(Label { classes, ..label });
        }
        Self::new(&path.display().to_string(), labels)
    }

    pub fn new(source: &str, labels: Vec<Label>) -> Result<Self> {
        if labels.is_empty() {
            bail!("{source}: the label set is empty");
        }
        let mut seen = std::collections::HashSet::new();
        for l in &labels {
            if !seen.insert(l.name.as_str()) {
                bail!("{source}: label '{}' appears twice", l.name);
            }
        }
        Ok(Self {
            source: source.to_string(),
            labels,
        })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn names(&self) -> Vec<&str> {
        self.labels.iter().map(|l| l.name.as_str()).collect()
    }
}

/// Named template sets `--template` accepts besides literal templates.
pub const TEMPLATE_SETS: &[&str] = &["satellite", "eurosat", "aerial", "plain", "remote-sensing"];

/// The default template when none is given.
pub const DEFAULT_TEMPLATE: &str = "a satellite photo of {}.";

fn template_set(name: &str) -> Option<Vec<&'static str>> {
    Some(match name {
        "satellite" => vec![DEFAULT_TEMPLATE],
        // CLIP's published EuroSAT templates.
        "eurosat" => vec![
            "a centered satellite photo of {}.",
            "a centered satellite photo of a {}.",
            "a centered satellite photo of the {}.",
        ],
        "aerial" => vec![
            "an aerial photo of {}.",
            "an aerial photograph of a {}.",
            "an aerial view of the {}.",
        ],
        "plain" => vec!["{}"],
        "remote-sensing" => vec![
            "a satellite photo of {}.",
            "a satellite image of a {}.",
            "an aerial photo of the {}.",
            "a remote sensing image of {}.",
            "a centered satellite photo of {}.",
        ],
        _ => return None,
    })
}

/// Prompt templates, each with exactly one `{}` where the label's wording goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Templates(pub Vec<String>);

impl Templates {
    /// `--template` values: literal templates with `{}` or named sets; none gives the default.
    pub fn parse(values: &[String]) -> Result<Self> {
        if values.is_empty() {
            return Ok(Self(vec![DEFAULT_TEMPLATE.to_string()]));
        }
        let mut out = Vec::new();
        for v in values {
            if let Some(set) = template_set(v.trim()) {
                out.extend(set.into_iter().map(String::from));
            } else if v.matches("{}").count() == 1 {
                out.push(v.clone());
            } else if v.contains("{}") {
                bail!("template {v:?} has more than one {{}}");
            } else {
                bail!(
                    "template {v:?} has no {{}} for the label (e.g. \"a satellite photo of {{}}.\"), and is not a template set ({})",
                    TEMPLATE_SETS.join(", ")
                );
            }
        }
        Ok(Self(out))
    }

    /// The templates quoted, for messages: `"a satellite photo of {}.", "…"`.
    pub fn describe(&self) -> String {
        self.0
            .iter()
            .map(|t| format!("{t:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Every prompt for one label: each wording in each template.
    pub fn prompts(&self, label: &Label) -> Vec<String> {
        label
            .wordings
            .iter()
            .flat_map(|w| self.0.iter().map(move |t| t.replacen("{}", w, 1)))
            .collect()
    }
}

fn normalized_class(s: &str) -> String {
    s.trim().to_lowercase().replace(['-', '_'], " ")
}

/// Which label stands for each dataset class: a label's `classes` (or its own name), compared
/// case-insensitively with `-` and `_` read as spaces.
pub fn map_classes(
    labels: &LabelSet,
    classes: &[String],
) -> Result<(HashMap<String, usize>, Vec<String>)> {
    let mut by_name: HashMap<String, usize> = HashMap::new();
    for (i, l) in labels.labels.iter().enumerate() {
        let stands_for = if l.classes.is_empty() {
            std::slice::from_ref(&l.name)
        } else {
            &l.classes[..]
        };
        for c in stands_for {
            if let Some(prev) = by_name.insert(normalized_class(c), i)
                && prev != i
            {
                bail!(
                    "{}: class '{c}' is claimed by labels '{}' and '{}'",
                    labels.source,
                    labels.labels[prev].name,
                    l.name
                );
            }
        }
    }
    let mut mapped = HashMap::new();
    let mut unmapped = Vec::new();
    for c in classes {
        match by_name.get(&normalized_class(c)) {
            Some(&i) => {
                mapped.insert(c.clone(), i);
            }
            None => unmapped.push(c.clone()),
        }
    }
    Ok((mapped, unmapped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_have_the_published_sizes_and_wordings() {
        assert_eq!(LabelSet::parse("eurosat").unwrap().len(), 10);
        assert_eq!(LabelSet::parse("xview").unwrap().len(), 60);
        assert_eq!(LabelSet::parse("rsicd").unwrap().len(), 30);
        let e = LabelSet::parse("eurosat").unwrap();
        let herb = e
            .labels
            .iter()
            .find(|l| l.name == "HerbaceousVegetation")
            .unwrap();
        assert_eq!(herb.wordings, vec!["brushland or shrubland"]);
        let r = LabelSet::parse("eurosat-reduced").unwrap();
        let covered: usize = r.labels.iter().map(|l| l.classes.len()).sum();
        assert_eq!(covered, 10);
    }

    #[test]
    fn label_names_match_without_case_and_near_misses_are_named() {
        let names = ["Forest", "River", "SeaLake", "forest fire"];
        assert_eq!(find_name(&names, "River", "--heatmap-label").unwrap(), 1);
        assert_eq!(find_name(&names, "sealake", "--heatmap-label").unwrap(), 2);
        let err = find_name(&names, "Rivr", "--heatmap-label")
            .unwrap_err()
            .to_string();
        assert!(err.contains("did you mean \"River\"?"), "{err}");
        let err = find_name(&names, "harbour", "--heatmap-label")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not in the label set") && !err.contains("did you mean"),
            "{err}"
        );
        // Equal ignoring case to two names: the exact one wins, else it is ambiguous.
        let two = ["Forest", "forest"];
        assert_eq!(find_name(&two, "forest", "x").unwrap(), 1);
        assert!(find_name(&two, "FOREST", "x").is_err());
    }

    #[test]
    fn inline_and_errors() {
        let s = LabelSet::parse("forest, river ,harbor").unwrap();
        assert_eq!(s.names(), vec!["forest", "river", "harbor"]);
        assert!(
            LabelSet::parse("")
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        assert!(
            LabelSet::parse(" , ,")
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        let err = LabelSet::parse("euro-sat").unwrap_err().to_string();
        assert!(err.contains("not a label preset"), "{err}");
        assert!(err.contains("did you mean eurosat?"), "{err}");
        let err = LabelSet::parse("forest").unwrap_err().to_string();
        assert!(!err.contains("did you mean"), "{err}");
        // Preset names in any case.
        let any_case = LabelSet::parse("EuroSAT").unwrap();
        assert_eq!(
            any_case.names(),
            LabelSet::parse("eurosat").unwrap().names()
        );
        assert_eq!(any_case.source, "eurosat");
        assert_eq!(LabelSet::parse_inline("XVIEW").unwrap().len(), 60);
        assert!(
            LabelSet::parse("a,a")
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
    }

    #[test]
    fn label_file_with_synonyms() {
        let dir = std::env::temp_dir().join(format!("skyscribe-labels-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("l.txt");
        std::fs::write(
            &f,
            "# land cover\nforest\nwater: lake | river | sea  # synonyms\n\n",
        )
        .unwrap();
        let s = LabelSet::parse(f.to_str().unwrap()).unwrap();
        assert_eq!(s.labels[1].wordings, vec!["lake", "river", "sea"]);
        let t = Templates::parse(&["a photo of {}.".into()]).unwrap();
        assert_eq!(
            t.prompts(&s.labels[1]),
            vec!["a photo of lake.", "a photo of river.", "a photo of sea."]
        );
    }

    #[test]
    fn templates() {
        assert_eq!(Templates::parse(&[]).unwrap().0, vec![DEFAULT_TEMPLATE]);
        assert_eq!(Templates::parse(&["eurosat".into()]).unwrap().0.len(), 3);
        assert!(
            Templates::parse(&["a photo".into()])
                .unwrap_err()
                .to_string()
                .contains("no {}")
        );
        assert!(Templates::parse(&["{} and {}".into()]).is_err());
    }
}
