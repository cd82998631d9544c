//! Names for sandboxes created without one, as upstream: `brave-otter`
//! (lowercase ASCII words only, so always a valid DNS label).

use ring::rand::{SecureRandom, SystemRandom};

const ADJECTIVES: &[&str] = &[
    "able", "agile", "amber", "ample", "apt", "azure", "bold", "brave", "brief", "bright", "brisk",
    "calm", "candid", "civil", "clean", "clear", "clever", "cosmic", "crisp", "curious", "daring",
    "deft", "eager", "early", "easy", "epic", "fair", "fancy", "fast", "fleet", "fond", "free",
    "fresh", "frank", "gentle", "giant", "glad", "golden", "grand", "green", "happy", "hardy",
    "honest", "humble", "ideal", "jolly", "keen", "kind", "large", "lively", "loyal", "lucid",
    "lucky", "mellow", "merry", "mighty", "modest", "neat", "nimble", "noble", "novel", "open",
    "patient", "plain", "polite", "proud", "quick", "quiet", "rapid", "rare", "ready", "regal",
    "robust", "rosy", "royal", "rustic", "safe", "sharp", "shiny", "silent", "simple", "sleek",
    "smart", "snowy", "solid", "spry", "steady", "stellar", "sturdy", "sunny", "swift", "tidy",
    "tender", "tough", "true", "trusty", "vast", "vivid", "warm", "wise",
];

const NOUNS: &[&str] = &[
    "acorn", "alpaca", "anchor", "aspen", "badger", "beacon", "beaver", "birch", "bison", "brook",
    "canyon", "cedar", "cheetah", "cloud", "comet", "condor", "coral", "cougar", "crane", "creek",
    "delta", "dingo", "dolphin", "dove", "eagle", "ember", "falcon", "fern", "finch", "fjord",
    "fox", "gazelle", "gecko", "glacier", "grove", "harbor", "hawk", "heron", "hill", "ibis",
    "island", "jaguar", "kestrel", "koala", "lagoon", "lark", "lemur", "lily", "lion", "lynx",
    "maple", "marten", "meadow", "mesa", "moose", "moth", "newt", "oak", "ocelot", "orca",
    "osprey", "otter", "owl", "panda", "pebble", "pine", "plover", "prairie", "puffin", "quail",
    "raven", "reef", "ridge", "river", "robin", "salmon", "sparrow", "spruce", "stork", "summit",
    "swan", "tapir", "tern", "thrush", "tiger", "trout", "tundra", "valley", "viper", "walrus",
    "willow", "wolf", "wombat", "wren", "yak", "zebra", "heath", "bluff", "cove", "dune",
];

fn pick(rng: &SystemRandom, words: &[&'static str]) -> Option<&'static str> {
    let mut b = [0u8; 4];
    rng.fill(&mut b).ok()?;
    let n = u32::from_le_bytes(b) as usize;
    words.get(n % words.len()).copied()
}

/// A random `adjective-noun`; `None` only if the system RNG fails.
pub fn two_words() -> Option<String> {
    let rng = SystemRandom::new();
    Some(format!("{}-{}", pick(&rng, ADJECTIVES)?, pick(&rng, NOUNS)?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn two_lowercase_words() {
        for _ in 0..100 {
            let n = super::two_words().unwrap();
            let (a, b) = n.split_once('-').unwrap();
            assert!(!a.is_empty() && !b.is_empty());
            assert!(n.chars().all(|c| c.is_ascii_lowercase() || c == '-'));
        }
    }
}
