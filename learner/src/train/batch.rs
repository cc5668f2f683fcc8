//! Batch assembly: chunks from several actors, each `[T, N]` with its own N,
//! laid out so that the critic and the advantage estimator run once per chunk
//! length.
//!
//! Chunks of equal length T sit side by side along the env axis (ΣN columns,
//! in the order given); a shorter final chunk forms a group of its own. The
//! index arithmetic lives here, on the host, as a pure function with its own
//! tests: each chunk's final observations (the true last observation of an
//! episode that ended inside it, `final_obs_index = t·N + n`) land at their
//! flat position `t·ΣN + offset + n` of the group, and REINFORCE's tail
//! returns at the chunk's columns.

use std::sync::Arc;

use flotilla_common::chunk::{Actions, Chunk, Observations};
use tch::{Device, Kind, Tensor};

/// A chunk on its way into a batch.
#[derive(Debug, Clone)]
pub struct Item {
    pub chunk: Chunk,
    /// `[N]` Monte-Carlo returns from the step after the chunk's end
    /// (REINFORCE only; see [`crate::algo::episodes::EpisodeStitcher`]).
    pub tail_returns: Option<Vec<f32>>,
    /// The name the chunk's actor gave at `Hello` (orders sync batches).
    pub actor_name: Arc<str>,
}

impl Item {
    pub fn new(chunk: Chunk) -> Self {
        Item {
            chunk,
            tail_returns: None,
            actor_name: Arc::from(""),
        }
    }
}

/// Chunks of one length laid side by side: `t` steps of `n` (= ΣN) columns.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub t: usize,
    pub n: usize,
    /// `[t+1, n, obs_dim]`, in the chunks' wire type.
    pub obs: Observations,
    /// `[t, n]` indices or `[t, n, act_dim]` values.
    pub actions: Actions,
    /// `[t, n]`.
    pub rewards: Vec<f32>,
    /// `[t, n]`, 1.0 where the episode terminated.
    pub terminated: Vec<f32>,
    /// `[t, n]`, 1.0 where the episode was truncated.
    pub truncated: Vec<f32>,
    /// `[t, n]`.
    pub behavior_logp: Vec<f32>,
    /// Flat `[t, n]` positions of the ended episodes, chunk by chunk.
    pub final_index: Vec<i64>,
    /// `[K, obs_dim]`, row k belonging to `final_index[k]`.
    pub final_obs: Observations,
    /// `[n]` returns from after the chunks' end (0 where an item has none).
    pub tail_returns: Vec<f32>,
}

fn flags(v: &[bool]) -> impl Iterator<Item = f32> + '_ {
    v.iter().map(|&b| if b { 1.0 } else { 0.0 })
}

/// Lays out `items` (validated chunks of one run, so one obs_dim and one
/// action space) as groups of equal chunk length, shortest first.
pub fn assemble(items: &[Item], obs_dim: usize) -> Vec<Group> {
    let mut lens: Vec<usize> = items.iter().map(|i| i.chunk.t).collect();
    lens.sort_unstable();
    lens.dedup();
    lens.into_iter()
        .map(|t| {
            let group: Vec<&Item> = items.iter().filter(|i| i.chunk.t == t).collect();
            assemble_group(&group, t, obs_dim)
        })
        .collect()
}

fn assemble_group(items: &[&Item], t: usize, d: usize) -> Group {
    let n: usize = items.iter().map(|i| i.chunk.n).sum();
    let continuous = matches!(
        items.first().map(|i| &i.chunk.actions),
        Some(Actions::Continuous(_))
    );
    // Validation gives every chunk of a run the run's observation dtype.
    let dtype = items
        .first()
        .map_or(Default::default(), |i| i.chunk.obs.dtype());
    let mut g = Group {
        t,
        n,
        obs: Observations::with_capacity(dtype, (t + 1) * n * d),
        actions: if continuous {
            Actions::Continuous(Vec::new())
        } else {
            Actions::Discrete(Vec::with_capacity(t * n))
        },
        rewards: Vec::with_capacity(t * n),
        terminated: Vec::with_capacity(t * n),
        truncated: Vec::with_capacity(t * n),
        behavior_logp: Vec::with_capacity(t * n),
        final_index: Vec::new(),
        final_obs: Observations::with_capacity(dtype, 0),
        tail_returns: Vec::with_capacity(n),
    };
    // Row by row: row s of the group is row s of every chunk, in order.
    for s in 0..=t {
        for i in items {
            let c = &i.chunk;
            g.obs.extend_from(&c.obs, s * c.n * d..(s + 1) * c.n * d);
            if s == t {
                continue;
            }
            let row = s * c.n..(s + 1) * c.n;
            g.rewards.extend_from_slice(&c.rewards[row.clone()]);
            g.terminated.extend(flags(&c.terminated[row.clone()]));
            g.truncated.extend(flags(&c.truncated[row.clone()]));
            g.behavior_logp
                .extend_from_slice(&c.behavior_logp[row.clone()]);
            match (&mut g.actions, &c.actions) {
                (Actions::Discrete(out), Actions::Discrete(a)) => out.extend_from_slice(&a[row]),
                (Actions::Continuous(out), Actions::Continuous(a)) => {
                    let k = a.len() / (c.t * c.n).max(1);
                    out.extend_from_slice(&a[row.start * k..row.end * k]);
                }
                // Validation gives every chunk of a run the run's action space.
                _ => unreachable!("chunks of one run share one action space"),
            }
        }
    }
    let mut offset = 0;
    for i in items {
        let c = &i.chunk;
        for (k, &flat) in c.final_obs_index.iter().enumerate() {
            let (step, env) = (flat / c.n, flat % c.n);
            g.final_index.push((step * n + offset + env) as i64);
            g.final_obs.extend_from(&c.final_obs, k * d..(k + 1) * d);
        }
        match &i.tail_returns {
            Some(tail) => g.tail_returns.extend_from_slice(tail),
            None => g.tail_returns.extend(std::iter::repeat_n(0.0, c.n)),
        }
        offset += c.n;
    }
    g
}

/// A [`Group`] on the device.
pub struct GroupTensors {
    pub t: i64,
    pub n: i64,
    /// `[t+1, n, obs_dim]` f32 (u8 observations are widened on the device).
    pub obs: Tensor,
    /// `[t, n]` i64 or `[t, n, act_dim]` f32.
    pub actions: Tensor,
    pub rewards: Tensor,
    pub terminated: Tensor,
    pub truncated: Tensor,
    pub behavior_logp: Tensor,
    /// `[K]` flat positions and `[K, obs_dim]` observations (K may be 0).
    pub final_index: Tensor,
    pub final_obs: Tensor,
    /// `[1, n]`.
    pub tail_returns: Tensor,
}

impl Group {
    /// Copies the group to `device`.
    pub fn to_device(&self, device: Device, obs_dim: usize) -> GroupTensors {
        let (t, n, d) = (self.t as i64, self.n as i64, obs_dim as i64);
        let up = |x: Tensor| x.to_device(device);
        GroupTensors {
            t,
            n,
            obs: observations(&self.obs, device).view([t + 1, n, d]),
            actions: up(match &self.actions {
                Actions::Discrete(a) => Tensor::from_slice(a).view([t, n]),
                Actions::Continuous(a) => Tensor::from_slice(a).view([t, n, -1]),
            }),
            rewards: up(Tensor::from_slice(&self.rewards).view([t, n])),
            terminated: up(Tensor::from_slice(&self.terminated).view([t, n])),
            truncated: up(Tensor::from_slice(&self.truncated).view([t, n])),
            behavior_logp: up(Tensor::from_slice(&self.behavior_logp).view([t, n])),
            final_index: up(Tensor::from_slice(&self.final_index)),
            final_obs: observations(&self.final_obs, device).view([-1, d]),
            tail_returns: up(Tensor::from_slice(&self.tail_returns).view([1, n])),
        }
    }
}

/// Observations as an f32 tensor on `device`. Bytes travel to the device
/// as bytes (a quarter of the copy) and are widened there.
fn observations(obs: &Observations, device: Device) -> Tensor {
    match obs {
        Observations::F32(v) => Tensor::from_slice(v).to_device(device),
        Observations::U8(v) => Tensor::from_slice(v).to_device(device).to_kind(Kind::Float),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: usize = 2;

    /// A chunk whose every value encodes where it came from: observation
    /// `[s, e, k]` of actor `a` is `a·1000 + s·100 + e·10 + k`, reward and
    /// log-prob `[s, e]` are `a·1000 + s·100 + e·10`.
    fn chunk(a: u32, t: usize, n: usize, ends: &[(usize, usize, bool)]) -> Chunk {
        let tag = |s: usize, e: usize| (a as usize * 1000 + s * 100 + e * 10) as f32;
        let mut terminated = vec![false; t * n];
        let mut truncated = vec![false; t * n];
        let mut final_obs_index = Vec::new();
        let mut final_obs = Vec::new();
        for &(s, e, term) in ends {
            let flat = s * n + e;
            if term {
                terminated[flat] = true;
            } else {
                truncated[flat] = true;
            }
            final_obs_index.push(flat);
            final_obs.extend((0..D).map(|k| -(tag(s, e) + k as f32)));
        }
        Chunk {
            run_id: "r".into(),
            env_id: "e".into(),
            actor_id: a,
            sequence: 1,
            policy_version: 0,
            t,
            n,
            obs: (0..=t)
                .flat_map(|s| (0..n).flat_map(move |e| (0..D).map(move |k| tag(s, e) + k as f32)))
                .collect::<Vec<f32>>()
                .into(),
            actions: Actions::Discrete((0..t * n).map(|i| (a as usize * 100 + i) as i64).collect()),
            rewards: (0..t)
                .flat_map(|s| (0..n).map(move |e| tag(s, e)))
                .collect(),
            terminated,
            truncated,
            behavior_logp: (0..t)
                .flat_map(|s| (0..n).map(move |e| -tag(s, e)))
                .collect(),
            behavior_value: None,
            final_obs_index,
            final_obs: final_obs.into(),
            episode_returns: vec![],
            episode_lengths: vec![],
        }
    }

    /// The chunk with every observation as a byte: its value mod 251.
    fn as_bytes(mut c: Chunk) -> Chunk {
        let bytes = |o: &Observations| -> Observations {
            let v = o.as_f32().unwrap();
            v.iter()
                .map(|&x| x.abs().rem_euclid(251.0) as u8)
                .collect::<Vec<u8>>()
                .into()
        };
        c.obs = bytes(&c.obs);
        c.final_obs = bytes(&c.final_obs);
        c
    }

    #[test]
    fn byte_observations_are_laid_out_alike_and_widened_on_the_device() {
        let ends = [(1, 0, true), (1, 2, false)];
        let f = [
            Item::new(chunk(1, 2, 2, &[(0, 1, false)])),
            Item::new(chunk(2, 2, 3, &ends)),
        ];
        let u = f.clone().map(|i| Item::new(as_bytes(i.chunk)));
        let (gf, gu) = (&assemble(&f, D)[0], &assemble(&u, D)[0]);
        assert_eq!(gu.obs.dtype(), flotilla_common::space::Dtype::Uint8);
        let widened = |o: &Observations| o.f32s(0..o.len()).into_owned();
        let bytes_of = |o: &Observations| -> Vec<f32> {
            o.as_f32()
                .unwrap()
                .iter()
                .map(|&x| f32::from(x.abs().rem_euclid(251.0) as u8))
                .collect()
        };
        assert_eq!(widened(&gu.obs), bytes_of(&gf.obs));
        assert_eq!(widened(&gu.final_obs), bytes_of(&gf.final_obs));
        assert_eq!(gu.final_index, gf.final_index);
        let tu = gu.to_device(Device::Cpu, D);
        assert_eq!(tu.obs.kind(), Kind::Float);
        assert_eq!(tu.obs.size(), [3, 5, D as i64]);
        assert_eq!(tu.final_obs.size(), [3, D as i64]);
        let back: Vec<f32> = Vec::try_from(tu.obs.flatten(0, -1)).unwrap();
        assert_eq!(back, bytes_of(&gf.obs));
        let back: Vec<f32> = Vec::try_from(tu.final_obs.flatten(0, -1)).unwrap();
        assert_eq!(back, bytes_of(&gf.final_obs));
    }

    #[test]
    fn chunks_of_different_widths_sit_side_by_side() {
        // Actor 1 with N = 2, actor 2 with N = 3, both T = 2.
        let items = [
            Item::new(chunk(1, 2, 2, &[])),
            Item::new(chunk(2, 2, 3, &[])),
        ];
        let groups = assemble(&items, D);
        assert_eq!(groups.len(), 1);
        let g = &groups[0];
        assert_eq!((g.t, g.n), (2, 5));
        // Row 1 of the group: actor 1's two columns, then actor 2's three.
        let row1: Vec<f32> = (0..5).map(|col| g.rewards[5 + col]).collect();
        assert_eq!(row1, [1100.0, 1110.0, 2100.0, 2110.0, 2120.0]);
        // The bootstrap row (s = T) of the observations is kept, per column.
        let obs = |s: usize, col: usize, k: usize| g.obs.as_f32().unwrap()[(s * 5 + col) * D + k];
        assert_eq!(obs(2, 0, 1), 1201.0);
        assert_eq!(obs(2, 4, 0), 2220.0);
        assert_eq!(obs(0, 3, 1), 2011.0);
        assert_eq!(g.obs.len(), 3 * 5 * D);
        assert_eq!(
            g.actions,
            Actions::Discrete(vec![100, 101, 200, 201, 202, 102, 103, 203, 204, 205])
        );
        assert_eq!(g.behavior_logp[9], -2120.0);
        assert_eq!(g.tail_returns, [0.0; 5]);
    }

    #[test]
    fn final_observations_land_at_their_group_positions() {
        // Actor 1 (N = 2): env 1 truncated at step 0. Actor 2 (N = 3): env 0
        // terminated at step 1, env 2 truncated at step 1.
        let items = [
            Item::new(chunk(1, 2, 2, &[(0, 1, false)])),
            Item::new(chunk(2, 2, 3, &[(1, 0, true), (1, 2, false)])),
        ];
        let g = &assemble(&items, D)[0];
        // Flat [T, ΣN = 5] positions: 0·5 + 0 + 1, 1·5 + 2 + 0, 1·5 + 2 + 2.
        assert_eq!(g.final_index, [1, 7, 9]);
        assert_eq!(
            g.final_obs.as_f32().unwrap(),
            [-1010.0, -1011.0, -2100.0, -2101.0, -2120.0, -2121.0]
        );
        // Flags follow the same layout: terminated only where it terminated.
        let at = |v: &[f32]| -> Vec<usize> { (0..10).filter(|&i| v[i] == 1.0).collect() };
        assert_eq!(at(&g.terminated), [7]);
        assert_eq!(at(&g.truncated), [1, 9]);
    }

    #[test]
    fn a_shorter_chunk_forms_its_own_group_and_order_is_kept() {
        let items = [
            Item::new(chunk(3, 4, 1, &[(3, 0, true)])),
            Item::new(chunk(1, 2, 2, &[(1, 1, true)])),
            Item::new(chunk(2, 4, 2, &[(0, 1, false)])),
        ];
        let groups = assemble(&items, D);
        assert_eq!(
            groups.iter().map(|g| (g.t, g.n)).collect::<Vec<_>>(),
            [(2, 2), (4, 3)]
        );
        let (short, long) = (&groups[0], &groups[1]);
        assert_eq!(short.final_index, [3]);
        // Long group: actor 3 (column 0), then actor 2 (columns 1-2).
        assert_eq!(long.rewards[..3], [3000.0, 2000.0, 2010.0]);
        // Item order: actor 3's end at 3·3 + 0, then actor 2's at 0·3 + 1 + 1.
        assert_eq!(long.final_index, [9, 2]);
        assert_eq!(
            long.final_obs.as_f32().unwrap(),
            [-3300.0, -3301.0, -2010.0, -2011.0]
        );
        let samples: usize = groups.iter().map(|g| g.t * g.n).sum();
        assert_eq!(samples, 4 + 4 + 8);
    }

    #[test]
    fn tail_returns_follow_their_chunk_and_continuous_actions_keep_their_width() {
        let mut a = chunk(1, 2, 2, &[]);
        a.actions = Actions::Continuous((0..2 * 2 * 3).map(|i| i as f32).collect());
        let mut b = chunk(2, 2, 1, &[]);
        b.actions = Actions::Continuous((0..2 * 3).map(|i| 100.0 + i as f32).collect());
        let items = [
            Item {
                tail_returns: Some(vec![5.0, 6.0]),
                ..Item::new(a)
            },
            Item::new(b),
        ];
        let g = &assemble(&items, D)[0];
        assert_eq!(g.tail_returns, [5.0, 6.0, 0.0]);
        let Actions::Continuous(act) = &g.actions else {
            panic!("continuous")
        };
        // [T = 2, ΣN = 3, 3]: row 0 is a's two envs then b's env.
        assert_eq!(act.len(), 2 * 3 * 3);
        assert_eq!(act[..9], [0., 1., 2., 3., 4., 5., 100., 101., 102.]);
        assert_eq!(act[9..], [6., 7., 8., 9., 10., 11., 103., 104., 105.]);
    }
}
