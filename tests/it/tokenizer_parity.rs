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
