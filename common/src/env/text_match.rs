//! `TextMatch-v0`: generate a target string one character at a time.
//!
//! The toy form of reinforcement learning on language models: the policy emits
//! tokens from a fixed character vocabulary, the "document" ends with an
//! end-of-text token (or at a length cap), and the only real reward is a
//! sequence-level score of the finished text against a reference.
//!
//! # Tokens and actions
//!
//! The vocabulary is the string `vocab` (default `"abcdefghijklmnopqrstuvwxyz "`:
//! lowercase letters and space), one token per character, token `i` being the
//! `i`-th character. Token `V = vocab.chars().count()` is end-of-text (EOT).
//! Actions are `Discrete(V + 1)`: one token per step.
//!
//! # Episodes
//!
//! `reset` draws a target uniformly from `targets` with the environment's
//! `Pcg64Mcg` stream (`reset(Some(seed))` re-seeds it with
//! `SeedableRng::seed_from_u64(seed)`; a new environment starts from
//! [`DEFAULT_SEED`]). A target listed twice is drawn twice as often.
//!
//! Each step appends the emitted character to the generated text, or, for EOT,
//! ends the text. The episode **terminates** (`terminated = true`) when EOT is
//! emitted or when `max_len` characters have been generated: the length cap is
//! part of the task (the text is complete), not a time limit. An episode thus
//! lasts at most `max_len` steps.
//!
//! `max_episode_steps` (default `max_len + 1`, which never binds) is the usual
//! time limit, `truncated = elapsed >= max_episode_steps` as Gymnasium's
//! `TimeLimit`; it only matters when set to `max_len` or less. A truncated
//! episode gets no final reward (the learner bootstraps instead). Values above
//! `max_len + 1` are rejected as meaningless.
//!
//! Stepping after the episode ended changes nothing: it returns reward `0.0`
//! with the flags of the final step (call `reset`).
//!
//! # Reward
//!
//! On the terminating step: the similarity of the generated text `g` to the
//! target `t`,
//!
//! ```text
//! 1 − levenshtein(g, t) / max(len(g), len(t))      (1.0 if both are empty)
//! ```
//!
//! with lengths and edits counted in characters. It lies in `[0, 1]`: `1.0` for
//! an exact match, `0.0` for EOT at the first step (the targets are never
//! empty). Every other step earns `0.0`, unless `dense_reward = true` adds a
//! shaping term: `+1 / max_len` on each step that emits a character equal to
//! the target's character at that position (position `i` = number of characters
//! generated before the step; nothing for EOT or past the target's end). The
//! dense terms of an episode sum to at most `len(t) / max_len ≤ 1`, so a perfect
//! episode returns `1 + len(t) / max_len` with shaping, `1.0` without.
//!
//! # Observation
//!
//! `Box([0, 1], L·(V+1) + L·V + (L+1))` with `L = max_len`, all entries 0.0 or
//! 1.0, three blocks laid out one after another (row-major):
//!
//! | block      | offset            | shape        | content                                                                  |
//! |------------|-------------------|--------------|--------------------------------------------------------------------------|
//! | target     | `0`               | `L × (V+1)`  | row `i`: one-hot of target token `i`; rows `i ≥ len(t)` are one-hot EOT (index `V`) |
//! | generated  | `L·(V+1)`         | `L × V`      | row `i`: one-hot of generated character `i`; rows not yet generated are all zero |
//! | position   | `L·(V+1) + L·V`   | `L + 1`      | one-hot of the number of characters generated so far (`0 ..= L`)        |
//!
//! With the defaults (`V = 27`, `L = 16`) that is 448 + 432 + 17 = 897 floats.
//!
//! # Configuration
//!
//! ```toml
//! [env]
//! id = "TextMatch-v0"
//! targets = ["hello world", "reinforce", "actor critic", "policy gradient"]
//! vocab = "abcdefghijklmnopqrstuvwxyz "
//! max_len = 16             # 1..=1024; every target must fit
//! dense_reward = false
//! max_episode_steps = 17   # default max_len + 1; 1..=max_len + 1
//! ```
//!
//! Stepping allocates nothing: the generated text, its tokens and the edit
//! distance's working row are preallocated at construction.

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use serde::Deserialize;

use super::{config_error, Env, EnvError, Step};
use crate::render::{Colour, Frame};
use crate::space::{ActionRef, Space};

pub const ID: &str = "TextMatch-v0";

/// The seed of a newly built environment's random stream.
pub const DEFAULT_SEED: u64 = 0;
/// The largest accepted `max_len`.
pub const MAX_LEN_LIMIT: usize = 1024;
/// The default vocabulary: lowercase letters and space.
pub const DEFAULT_VOCAB: &str = "abcdefghijklmnopqrstuvwxyz ";
/// The default targets.
pub const DEFAULT_TARGETS: &[&str] = &[
    "hello world",
    "reinforce",
    "actor critic",
    "policy gradient",
];

/// Configuration of `TextMatch-v0` (see the module documentation).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TextMatchConfig {
    /// The texts to reproduce; one is drawn per episode.
    pub targets: Vec<String>,
    /// The characters the policy can emit, each once; EOT comes on top.
    pub vocab: String,
    /// The most characters one episode generates.
    pub max_len: usize,
    /// Adds `+1/max_len` for each character matching the target at its position.
    pub dense_reward: bool,
    /// Time limit; `None` means `max_len + 1` (never binds).
    pub max_episode_steps: Option<u32>,
}

impl Default for TextMatchConfig {
    fn default() -> Self {
        TextMatchConfig {
            targets: DEFAULT_TARGETS.iter().map(|s| (*s).to_owned()).collect(),
            vocab: DEFAULT_VOCAB.to_owned(),
            max_len: 16,
            dense_reward: false,
            max_episode_steps: None,
        }
    }
}

/// The text-matching environment.
#[derive(Debug, Clone)]
pub struct TextMatch {
    vocab: Vec<char>,
    targets: Vec<String>,
    target_tokens: Vec<Vec<usize>>,
    max_len: usize,
    dense_reward: bool,
    max_episode_steps: u32,
    rng: Pcg64Mcg,
    target: usize,
    generated: String,
    generated_tokens: Vec<usize>,
    elapsed: u32,
    /// The final step's flags once the episode has ended.
    ended: Option<(bool, bool)>,
    /// Working row of the edit distance (`max_len + 1` entries).
    lev_row: Vec<usize>,
    observation_space: Space,
    action_space: Space,
}

impl TextMatch {
    pub fn new(cfg: TextMatchConfig) -> Result<Self, EnvError> {
        if !(1..=MAX_LEN_LIMIT).contains(&cfg.max_len) {
            return Err(config_error(
                ID,
                format!(
                    "max_len must be between 1 and {MAX_LEN_LIMIT}, got {}",
                    cfg.max_len
                ),
            ));
        }
        let max_len = cfg.max_len;
        let vocab: Vec<char> = cfg.vocab.chars().collect();
        if vocab.is_empty() {
            return Err(config_error(
                ID,
                "vocab is empty; give the characters the policy can emit, e.g. \
                 \"abcdefghijklmnopqrstuvwxyz \"",
            ));
        }
        for (i, c) in vocab.iter().enumerate() {
            if vocab[..i].contains(c) {
                return Err(config_error(
                    ID,
                    format!(
                        "vocab has `{}` more than once; each character may appear only once",
                        c.escape_debug()
                    ),
                ));
            }
        }
        if cfg.targets.is_empty() {
            return Err(config_error(
                ID,
                "targets is empty; give at least one non-empty target string",
            ));
        }
        let mut target_tokens = Vec::with_capacity(cfg.targets.len());
        for (i, t) in cfg.targets.iter().enumerate() {
            if t.is_empty() {
                return Err(config_error(
                    ID,
                    format!("targets[{i}] is empty; every target needs at least one character"),
                ));
            }
            let tokens = t
                .chars()
                .map(|c| {
                    vocab.iter().position(|&v| v == c).ok_or_else(|| {
                        config_error(
                            ID,
                            format!(
                                "targets[{i}] ({t:?}) has `{}`, which is not in vocab ({:?}); \
                                 targets may only use vocab characters",
                                c.escape_debug(),
                                cfg.vocab
                            ),
                        )
                    })
                })
                .collect::<Result<Vec<usize>, EnvError>>()?;
            if tokens.len() > max_len {
                return Err(config_error(
                    ID,
                    format!(
                        "targets[{i}] ({t:?}) has {} characters, more than max_len = {max_len}; \
                         raise max_len or shorten the target",
                        tokens.len()
                    ),
                ));
            }
            target_tokens.push(tokens);
        }
        let longest = max_len as u32 + 1;
        let max_episode_steps = match cfg.max_episode_steps {
            None => longest,
            Some(m) if (1..=longest).contains(&m) => m,
            Some(m) => {
                return Err(config_error(
                    ID,
                    format!(
                        "max_episode_steps must be between 1 and max_len + 1 = {longest} \
                         (an episode never lasts more than max_len steps), got {m}"
                    ),
                ))
            }
        };
        let v = vocab.len();
        let obs_dim = max_len * (v + 1) + max_len * v + max_len + 1;
        let max_char_bytes = vocab.iter().map(|c| c.len_utf8()).max().unwrap_or(1);
        let mut env = TextMatch {
            vocab,
            targets: cfg.targets,
            target_tokens,
            max_len,
            dense_reward: cfg.dense_reward,
            max_episode_steps,
            rng: Pcg64Mcg::seed_from_u64(DEFAULT_SEED),
            target: 0,
            generated: String::with_capacity(max_len * max_char_bytes),
            generated_tokens: Vec::with_capacity(max_len),
            elapsed: 0,
            ended: None,
            lev_row: vec![0; max_len + 1],
            observation_space: Space::uniform_box(0.0, 1.0, obs_dim),
            action_space: Space::Discrete { n: v + 1 },
        };
        env.begin_episode();
        Ok(env)
    }

    /// The text generated so far in this episode.
    pub fn generated(&self) -> &str {
        &self.generated
    }

    /// This episode's target.
    pub fn target(&self) -> &str {
        &self.targets[self.target]
    }

    /// Index of this episode's target in [`TextMatch::targets`].
    pub fn target_index(&self) -> usize {
        self.target
    }

    /// All targets, in configuration order.
    pub fn targets(&self) -> &[String] {
        &self.targets
    }

    /// The end-of-text action (the vocabulary size `V`).
    pub fn eot(&self) -> usize {
        self.vocab.len()
    }

    /// The action that emits `c`, if it is in the vocabulary.
    pub fn token(&self, c: char) -> Option<usize> {
        self.vocab.iter().position(|&v| v == c)
    }

    /// The most characters one episode generates.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The time limit in force.
    pub fn max_episode_steps(&self) -> u32 {
        self.max_episode_steps
    }

    fn begin_episode(&mut self) {
        self.target = self.rng.random_range(0..self.targets.len());
        self.generated.clear();
        self.generated_tokens.clear();
        self.elapsed = 0;
        self.ended = None;
    }

    fn write_obs(&self, obs: &mut [f32]) {
        let (l, v) = (self.max_len, self.vocab.len());
        assert_eq!(
            obs.len(),
            l * (v + 1) + l * v + l + 1,
            "{ID}: observation buffer has the wrong length"
        );
        obs.fill(0.0);
        let target = &self.target_tokens[self.target];
        for (i, row) in obs[..l * (v + 1)].chunks_exact_mut(v + 1).enumerate() {
            row[target.get(i).copied().unwrap_or(v)] = 1.0;
        }
        let g0 = l * (v + 1);
        for (i, &tok) in self.generated_tokens.iter().enumerate() {
            obs[g0 + i * v + tok] = 1.0;
        }
        obs[g0 + l * v + self.generated_tokens.len()] = 1.0;
    }
}

impl Env for TextMatch {
    /// The target and the text generated so far, as a text frame.
    fn render(&self) -> Option<Frame> {
        let target = &self.targets[self.target];
        let chars = self.max_len.max(target.chars().count()) + 9;
        let mut f = Frame::new(chars * 12 + 16, 52);
        f.text(8.0, 8.0, &format!("target:  {target}"), 2.0, Colour::Ink);
        f.text(
            8.0,
            30.0,
            &format!("written: {}", self.generated),
            2.0,
            Colour::Agent,
        );
        Some(f)
    }

    fn id(&self) -> &'static str {
        ID
    }

    fn observation_space(&self) -> &Space {
        &self.observation_space
    }

    fn action_space(&self) -> &Space {
        &self.action_space
    }

    fn reset(&mut self, seed: Option<u64>, obs: &mut [f32]) {
        if let Some(seed) = seed {
            self.rng = Pcg64Mcg::seed_from_u64(seed);
        }
        self.begin_episode();
        self.write_obs(obs);
    }

    fn step(&mut self, action: ActionRef<'_>, obs: &mut [f32]) -> Step {
        let eot = self.vocab.len();
        let a = match action {
            ActionRef::Discrete(a) if a <= eot => a,
            other => panic!(
                "{ID}: action {other:?} is outside the action space Discrete({})",
                eot + 1
            ),
        };
        if let Some((terminated, truncated)) = self.ended {
            self.write_obs(obs);
            return Step {
                reward: 0.0,
                terminated,
                truncated,
            };
        }
        self.elapsed = self.elapsed.saturating_add(1);
        let target = &self.target_tokens[self.target];
        let mut reward = 0.0;
        let terminated = if a == eot {
            true
        } else {
            let pos = self.generated_tokens.len();
            if self.dense_reward && target.get(pos) == Some(&a) {
                reward += 1.0 / self.max_len as f32;
            }
            self.generated_tokens.push(a);
            self.generated.push(self.vocab[a]);
            self.generated_tokens.len() == self.max_len
        };
        if terminated {
            reward += similarity_of(&self.generated_tokens, target, &mut self.lev_row);
        }
        let truncated = self.elapsed >= self.max_episode_steps;
        if terminated || truncated {
            self.ended = Some((terminated, truncated));
        }
        self.write_obs(obs);
        Step {
            reward,
            terminated,
            truncated,
        }
    }
}

/// The Levenshtein (edit) distance between `a` and `b` in characters: the
/// fewest single-character insertions, deletions and substitutions that turn
/// one into the other.
pub fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut row = vec![0; b.len() + 1];
    levenshtein_in(&a, &b, &mut row)
}

/// `1 − levenshtein(a, b) / max(len(a), len(b))` in characters, `1.0` if both
/// are empty: the episode's final reward.
pub fn similarity(a: &str, b: &str) -> f32 {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut row = vec![0; b.len() + 1];
    similarity_of(&a, &b, &mut row)
}

fn similarity_of<T: PartialEq>(a: &[T], b: &[T], row: &mut [usize]) -> f32 {
    let longest = a.len().max(b.len());
    if longest == 0 {
        return 1.0;
    }
    1.0 - levenshtein_in(a, b, row) as f32 / longest as f32
}

/// The classic dynamic programme over one row; `row` needs `b.len() + 1` entries.
fn levenshtein_in<T: PartialEq>(a: &[T], b: &[T], row: &mut [usize]) -> usize {
    let row = &mut row[..=b.len()];
    for (j, r) in row.iter_mut().enumerate() {
        *r = j;
    }
    for (i, x) in a.iter().enumerate() {
        // invariant: row[..=j] holds distances of a[..=i], row[j+1..] of a[..i]
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, y) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1).min(row[j] + 1).min(diag + usize::from(x != y));
            diag = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::EnvSpec;

    fn cfg(targets: &[&str], vocab: &str, max_len: usize) -> TextMatchConfig {
        TextMatchConfig {
            targets: targets.iter().map(|s| (*s).to_owned()).collect(),
            vocab: vocab.to_owned(),
            max_len,
            ..Default::default()
        }
    }

    fn abc(max_len: usize, dense: bool) -> TextMatch {
        TextMatch::new(TextMatchConfig {
            dense_reward: dense,
            ..cfg(&["abc"], "abcd", max_len)
        })
        .unwrap()
    }

    fn obs_of(env: &TextMatch) -> Vec<f32> {
        vec![0.0; env.observation_space().flat_dim()]
    }

    /// Steps `env` through `text` (characters) then EOT if `eot`; returns the steps.
    fn emit(env: &mut TextMatch, text: &str, eot: bool, obs: &mut [f32]) -> Vec<Step> {
        let mut actions: Vec<usize> = text.chars().map(|c| env.token(c).unwrap()).collect();
        if eot {
            actions.push(env.eot());
        }
        actions
            .into_iter()
            .map(|a| env.step(ActionRef::Discrete(a), obs))
            .collect()
    }

    fn err(cfg: TextMatchConfig) -> String {
        let Err(e) = TextMatch::new(cfg) else {
            panic!("the configuration was accepted")
        };
        assert!(matches!(e, EnvError::Config { env: ID, .. }), "{e:?}");
        e.to_string()
    }

    #[test]
    fn levenshtein_hand_worked_examples() {
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("sitting", "kitten"), 3);
        assert_eq!(levenshtein("", ""), 0);
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(levenshtein("abc", ""), 3);
        assert_eq!(levenshtein("policy", "policy"), 0);
        assert_eq!(levenshtein("flaw", "lawn"), 2);
        assert_eq!(levenshtein("abc", "abd"), 1);
        assert_eq!(levenshtein("abc", "ab"), 1);
        assert_eq!(levenshtein("ab", "ba"), 2);
        assert_eq!(levenshtein("intention", "execution"), 5);
        // characters, not bytes
        assert_eq!(levenshtein("héllo", "hello"), 1);
        assert_eq!(similarity("", ""), 1.0);
        assert_eq!(similarity("abc", ""), 0.0);
        assert_eq!(similarity("kitten", "sitting"), 1.0 - 3.0 / 7.0);
    }

    #[test]
    fn defaults() {
        let env = TextMatch::new(TextMatchConfig::default()).unwrap();
        assert_eq!(env.action_space(), &Space::Discrete { n: 28 });
        assert_eq!(env.observation_space().flat_dim(), 16 * 28 + 16 * 27 + 17);
        assert_eq!(env.max_episode_steps(), 17);
        assert_eq!(env.eot(), 27);
        assert_eq!(env.token(' '), Some(26));
        assert_eq!(env.targets().len(), 4);
        assert_eq!(env.id(), ID);
    }

    #[test]
    fn hand_computed_similarity_reward() {
        let mut env = abc(8, false);
        let mut o = obs_of(&env);
        env.reset(Some(0), &mut o);
        assert_eq!(env.target(), "abc");
        let steps = emit(&mut env, "abd", true, &mut o);
        assert_eq!(env.generated(), "abd");
        for s in &steps[..3] {
            assert_eq!(
                *s,
                Step {
                    reward: 0.0,
                    terminated: false,
                    truncated: false
                }
            );
        }
        assert_eq!(
            steps[3],
            Step {
                reward: 1.0 - 1.0 / 3.0,
                terminated: true,
                truncated: false
            }
        );
        // a longer text is normalised by its own length: "abcdd" vs "abc" = 1 − 2/5
        env.reset(None, &mut o);
        let steps = emit(&mut env, "abcdd", true, &mut o);
        assert_eq!(steps.last().unwrap().reward, 1.0 - 2.0 / 5.0);
    }

    #[test]
    fn perfect_generation_scores_one() {
        let mut env = TextMatch::new(TextMatchConfig::default()).unwrap();
        let mut o = obs_of(&env);
        for seed in 0..8 {
            env.reset(Some(seed), &mut o);
            let target = env.target().to_owned();
            let steps = emit(&mut env, &target, true, &mut o);
            assert_eq!(steps.len(), target.len() + 1);
            let last = steps.last().unwrap();
            assert!(last.terminated && !last.truncated);
            assert_eq!(last.reward, 1.0);
            assert_eq!(steps.iter().map(|s| s.reward).sum::<f32>(), 1.0);
        }
    }

    #[test]
    fn eot_first_scores_zero() {
        let mut env = abc(8, false);
        let mut o = obs_of(&env);
        env.reset(None, &mut o);
        let s = env.step(ActionRef::Discrete(env.eot()), &mut o);
        assert_eq!(
            s,
            Step {
                reward: 0.0,
                terminated: true,
                truncated: false
            }
        );
        assert_eq!(env.generated(), "");
    }

    #[test]
    fn max_len_ends_the_text() {
        let mut env = TextMatch::new(cfg(&["ab"], "ab", 4)).unwrap();
        let mut o = obs_of(&env);
        env.reset(None, &mut o);
        let steps = emit(&mut env, "abab", false, &mut o);
        for s in &steps[..3] {
            assert!(!s.done());
        }
        assert_eq!(
            steps[3],
            Step {
                reward: 1.0 - 2.0 / 4.0,
                terminated: true,
                truncated: false
            }
        );
        assert_eq!(env.generated(), "abab");
        // a target of exactly max_len, generated perfectly, needs no EOT
        let mut env = TextMatch::new(cfg(&["abba"], "ab", 4)).unwrap();
        env.reset(None, &mut o);
        let steps = emit(&mut env, "abba", false, &mut o);
        assert_eq!(
            steps[3],
            Step {
                reward: 1.0,
                terminated: true,
                truncated: false
            }
        );
    }

    #[test]
    fn time_limit_below_max_len_truncates_without_final_reward() {
        let mut env = TextMatch::new(TextMatchConfig {
            max_episode_steps: Some(3),
            ..cfg(&["abc"], "abcd", 8)
        })
        .unwrap();
        let mut o = obs_of(&env);
        env.reset(None, &mut o);
        let steps = emit(&mut env, "abc", false, &mut o);
        assert!(!steps[1].done());
        assert_eq!(
            steps[2],
            Step {
                reward: 0.0,
                terminated: false,
                truncated: true
            }
        );
        // EOT on the last allowed step: terminated (and truncated), scored
        env.reset(None, &mut o);
        let steps = emit(&mut env, "ab", true, &mut o);
        assert_eq!(
            steps[2],
            Step {
                reward: 1.0 - 1.0 / 3.0,
                terminated: true,
                truncated: true
            }
        );
        // the limit max_len + 1 never binds
        let mut env = TextMatch::new(TextMatchConfig {
            max_episode_steps: Some(5),
            ..cfg(&["abc"], "abcd", 4)
        })
        .unwrap();
        let mut o = obs_of(&env);
        env.reset(None, &mut o);
        let steps = emit(&mut env, "dddd", false, &mut o);
        assert!(steps[3].terminated && !steps[3].truncated);
    }

    #[test]
    fn dense_reward_on_and_off() {
        let per = 1.0 / 8.0;
        let mut env = abc(8, true);
        let mut o = obs_of(&env);
        env.reset(None, &mut o);
        // a (match), d (miss), c (match), d (past the target: nothing), EOT
        let steps = emit(&mut env, "adcd", true, &mut o);
        let rewards: Vec<f32> = steps.iter().map(|s| s.reward).collect();
        let final_score = 1.0 - 2.0 / 4.0; // "adcd" vs "abc"
        assert_eq!(rewards, vec![per, 0.0, per, 0.0, final_score]);
        // perfect: 1 + len/max_len
        env.reset(None, &mut o);
        let steps = emit(&mut env, "abc", true, &mut o);
        let ret: f32 = steps.iter().map(|s| s.reward).sum();
        assert_eq!(ret, 1.0 + 3.0 * per);
        // the length cap's last character earns both terms
        let mut env = abc(3, true);
        let mut o = obs_of(&env);
        env.reset(None, &mut o);
        let steps = emit(&mut env, "abc", false, &mut o);
        assert_eq!(steps[2].reward, 1.0 / 3.0 + 1.0);
        // off: only the final score
        let mut env = abc(8, false);
        let mut o = obs_of(&env);
        env.reset(None, &mut o);
        let steps = emit(&mut env, "adcd", true, &mut o);
        let rewards: Vec<f32> = steps.iter().map(|s| s.reward).collect();
        assert_eq!(rewards, vec![0.0, 0.0, 0.0, 0.0, final_score]);
    }

    #[test]
    fn observation_contents() {
        // V = 4 (a b c d), EOT = 4, L = 5
        let mut env = abc(5, false);
        let mut o = obs_of(&env);
        assert_eq!(o.len(), 5 * 5 + 5 * 4 + 6);
        env.reset(None, &mut o);
        let mut want = vec![0.0f32; o.len()];
        // target "abc" then EOT rows
        for (i, tok) in [0, 1, 2, 4, 4].into_iter().enumerate() {
            want[i * 5 + tok] = 1.0;
        }
        let mut first = want.clone();
        first[25 + 20] = 1.0; // position 0
        assert_eq!(o, first);
        emit(&mut env, "ad", false, &mut o);
        want[25] = 1.0; // generated[0] = a
        want[25 + 4 + 3] = 1.0; // generated[1] = d
        want[25 + 20 + 2] = 1.0; // position 2
        assert_eq!(o, want);
        assert_eq!(env.generated(), "ad");
        // EOT leaves the text as it is
        emit(&mut env, "", true, &mut o);
        assert_eq!(o, want);
        // stale contents are overwritten
        let mut dirty = vec![3.0f32; o.len()];
        env.reset(None, &mut dirty);
        assert_eq!(dirty, first);
    }

    #[test]
    fn target_sampling_is_seeded_and_covers_all_targets() {
        let mut env = TextMatch::new(TextMatchConfig::default()).unwrap();
        let mut o = obs_of(&env);
        let draw = |env: &mut TextMatch, seed: u64, o: &mut [f32]| -> Vec<usize> {
            env.reset(Some(seed), o);
            let mut v = vec![env.target_index()];
            for _ in 0..50 {
                env.reset(None, o);
                v.push(env.target_index());
            }
            v
        };
        let a = draw(&mut env, 5, &mut o);
        let b = draw(&mut env, 5, &mut o);
        let mut other = TextMatch::new(TextMatchConfig::default()).unwrap();
        let c = draw(&mut other, 5, &mut o);
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_ne!(a, draw(&mut env, 6, &mut o));
        for t in 0..4 {
            assert!(a.contains(&t), "target {t} never drawn: {a:?}");
        }
        // the first seed's draws are spread out (each ~1/4 of 4000)
        let mut counts = [0usize; 4];
        for seed in 0..4000 {
            env.reset(Some(seed), &mut o);
            counts[env.target_index()] += 1;
        }
        assert!(
            counts.iter().all(|&n| (800..1200).contains(&n)),
            "{counts:?}"
        );
        // a fresh environment is deterministic too
        let fresh = |_: ()| {
            TextMatch::new(TextMatchConfig::default())
                .unwrap()
                .target_index()
        };
        assert_eq!(fresh(()), fresh(()));
        assert_eq!(env.targets()[env.target_index()], env.target());
    }

    #[test]
    fn stepping_after_the_end_changes_nothing() {
        let mut env = abc(8, true);
        let mut o = obs_of(&env);
        env.reset(None, &mut o);
        emit(&mut env, "ab", true, &mut o);
        let before = o.clone();
        let s = env.step(ActionRef::Discrete(0), &mut o);
        assert_eq!(
            s,
            Step {
                reward: 0.0,
                terminated: true,
                truncated: false
            }
        );
        assert_eq!(env.generated(), "ab");
        assert_eq!(o, before);
    }

    #[test]
    #[should_panic(expected = "outside the action space Discrete(5)")]
    fn invalid_action_panics() {
        let mut env = abc(8, false);
        let mut o = obs_of(&env);
        env.reset(None, &mut o);
        env.step(ActionRef::Discrete(5), &mut o);
    }

    #[test]
    fn unicode_vocab_works() {
        let mut env = TextMatch::new(cfg(&["ñé"], "éñ", 3)).unwrap();
        let mut o = obs_of(&env);
        env.reset(None, &mut o);
        let steps = emit(&mut env, "ñé", true, &mut o);
        assert_eq!(steps[2].reward, 1.0);
        assert_eq!(env.generated(), "ñé");
        // stepping never grows the preallocated buffers, even with multi-byte characters
        let caps = (env.generated.capacity(), env.generated_tokens.capacity());
        env.reset(None, &mut o);
        emit(&mut env, "ñññ", false, &mut o);
        assert_eq!(env.generated(), "ñññ");
        assert_eq!(
            (env.generated.capacity(), env.generated_tokens.capacity()),
            caps
        );
    }

    #[test]
    fn builds_from_toml() {
        let spec: EnvSpec = toml::from_str(
            "id = \"TextMatch-v0\"\ntargets = [\"ab\", \"ba\"]\nvocab = \"ab\"\nmax_len = 3\n\
             dense_reward = true\nmax_episode_steps = 4\n",
        )
        .unwrap();
        let env = spec.make().unwrap();
        assert_eq!(env.action_space(), &Space::Discrete { n: 3 });
        assert_eq!(env.observation_space().flat_dim(), 3 * 3 + 3 * 2 + 4);
    }

    #[test]
    fn config_errors_name_the_key() {
        let m = err(cfg(&["ab"], "ab", 0));
        assert!(
            m.contains("max_len must be between 1 and 1024, got 0"),
            "{m}"
        );
        let m = err(cfg(&["ab"], "ab", 1025));
        assert!(
            m.contains("max_len must be between 1 and 1024, got 1025"),
            "{m}"
        );
        let m = err(cfg(&["ab"], "", 4));
        assert!(m.contains("vocab is empty"), "{m}");
        let m = err(cfg(&["ab"], "aba", 4));
        assert!(m.contains("vocab has `a` more than once"), "{m}");
        let m = err(cfg(&[], "ab", 4));
        assert!(m.contains("targets is empty"), "{m}");
        let m = err(cfg(&["ab", ""], "ab", 4));
        assert!(m.contains("targets[1] is empty"), "{m}");
        let m = err(cfg(&["ab", "abc"], "ab", 4));
        assert!(
            m.contains("targets[1] (\"abc\") has `c`, which is not in vocab (\"ab\")"),
            "{m}"
        );
        let m = err(cfg(&["abab", "ababa"], "ab", 4));
        assert!(
            m.contains("targets[1] (\"ababa\") has 5 characters, more than max_len = 4"),
            "{m}"
        );
        // the defaults' targets name the mismatch when only vocab changes
        let m = err(TextMatchConfig {
            vocab: "abc".into(),
            ..Default::default()
        });
        assert!(m.contains("targets[0]") && m.contains("`h`"), "{m}");
        for bad in [0, 6, 100] {
            let m = err(TextMatchConfig {
                max_episode_steps: Some(bad),
                ..cfg(&["ab"], "ab", 4)
            });
            assert!(
                m.contains("max_episode_steps must be between 1 and max_len + 1 = 5")
                    && m.contains(&format!("got {bad}")),
                "{m}"
            );
        }
        for good in [1, 4, 5] {
            TextMatch::new(TextMatchConfig {
                max_episode_steps: Some(good),
                ..cfg(&["ab"], "ab", 4)
            })
            .unwrap();
        }
    }
}
