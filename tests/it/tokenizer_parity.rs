//! Token ids identical to transformers' CLIPTokenizer (truncated to 77, end token kept) and
//! GPT2Tokenizer on 500+ strings: RSICD captions, label prompts, Unicode, empty, over-long.

use crate::common;

use common::*;
use skyscribe::tokenizer::TextTokenizer;

#[test]
fn clip_and_gpt2_ids_match_the_reference() {
    let r = read_json(&fixtures().join("tokenizers/reference_ids.json"));
    let strings: Vec<&str> = r["strings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(strings.len() >= 500);
    let clip = TextTokenizer::from_file(&repo().join("assets/tokenizers/clip/tokenizer.json"), 77)
        .unwrap();
    let gpt2 =
        tokenizers::Tokenizer::from_file(repo().join("assets/tokenizers/gpt2/tokenizer.json"))
            .unwrap();
    let mut truncated = 0;
    for (i, s) in strings.iter().enumerate() {
        let expected: Vec<u32> = integers(&r["clip"][i]);
        let ours = clip.encode(s).unwrap();
        assert_eq!(ours, expected, "CLIP ids of {s:?}");
        assert_eq!(ours.first(), Some(&49406));
        assert_eq!(ours.last(), Some(&49407));
        truncated += (ours.len() == 77) as usize;
        let g = gpt2.encode(*s, false).unwrap();
        assert_eq!(
            g.get_ids(),
            &integers::<u32>(&r["gpt2"][i])[..],
            "GPT-2 ids of {s:?}"
        );
    }
    assert!(truncated >= 3, "the fixture must exercise truncation");
}

/// Long texts are tokenized by prefixes (a 15 MB text costs what its first words cost): the ids
/// must be those of tokenizing the whole text and truncating, as transformers does.
#[test]
fn long_texts_give_the_ids_of_the_whole_text_truncated() {
    let path = repo().join("assets/tokenizers/clip/tokenizer.json");
    let clip = TextTokenizer::from_file(&path, 77).unwrap();
    let raw = tokenizers::Tokenizer::from_file(&path).unwrap();
    let whole = |s: &str| {
        let mut ids = raw.encode(s, true).unwrap().get_ids().to_vec();
        if ids.len() > 77 {
            let last = *ids.last().unwrap();
            ids.truncate(77);
            ids[76] = last;
        }
        ids
    };
    let words = [
        "dense",
        "résidential",
        "área,",
        "many",
        "buildings",
        "are",
        "near",
        "a",
        "river.",
        "港口",
        "🛰️",
        "it's",
        "(green)",
        "1,024",
        "trees",
        "\t\n",
    ];
    // Texts past the first prefix (77 × 16 bytes): words and spaces; words with long runs of
    // spaces; and one without any space at all, cut inside its only word.
    let mut texts = Vec::new();
    for seed in 0..6usize {
        let t: String = (0..2000)
            .map(|i| words[(i * 7 + seed * 3 + i / 5) % words.len()])
            .collect::<Vec<_>>()
            .join(if seed % 2 == 0 { " " } else { "      " });
        texts.push(t);
    }
    texts.push("ab".repeat(5000));
    texts.push(format!("{}{}", " ".repeat(3000), "a river ".repeat(300)));
    texts.push(format!("{}{}", "é".repeat(617), " x".repeat(1000)));
    for t in &texts {
        assert!(t.len() > 77 * 16);
        assert_eq!(clip.encode(t).unwrap(), whole(t), "{:?}…", &t[..40]);
    }
    // 15 MB: the same ids as its first kilobytes, without tokenizing 15 MB.
    let huge = "a field of wheat beside a road ".repeat(500_000);
    assert!(huge.len() > 15_000_000);
    let ids = clip.encode(&huge).unwrap();
    assert_eq!(ids.len(), 77);
    assert_eq!(ids, whole(&huge[..4000]));
}
