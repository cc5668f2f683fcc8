//! `Maze-v0`: find the exit of a fixed grid maze.
//!
//! A small navigation task for tabular-sized problems: the layout is fixed for
//! the whole run (identical on every actor, given the configuration), so a
//! policy network can memorise it from the agent's position alone.
//!
//! # The maze
//!
//! The maze is a graph of cells on an `H × W` grid; the agent moves between
//! 4-neighbouring cells unless a wall is in the way. It comes from one of two
//! sources:
//!
//! * **Generated** (the default): a *perfect* maze (a spanning tree of the
//!   `size × size` cell grid: every cell reachable, exactly one path between any
//!   two cells) carved by a randomised depth-first search (the "recursive
//!   backtracker") driven by `Pcg64Mcg::seed_from_u64(maze_seed)`. Walls lie
//!   *between* cells. The start is the top-left cell `(0, 0)`, the exit the
//!   bottom-right cell `(size - 1, size - 1)`.
//! * **A `layout` string**: one text row per grid row, rows separated by
//!   newlines, one character per cell: `#` wall, `.` free, `S` start (free),
//!   `G` goal (free). Leading and trailing whitespace of each row is ignored and
//!   blank rows are skipped, so the layout can be written as an indented TOML
//!   multi-line string. Every row must have the same width, there must be
//!   exactly one `S` and one `G`, and `G` must be reachable from `S`. Here the
//!   walls are whole cells: the agent can never stand on a `#`.
//!
//! Positions are `(row, column)`, row 0 at the top. Both sources are limited to
//! [`MAX_CELLS`] cells (`size` ≤ 64).
//!
//! # Dynamics
//!
//! Actions are `Discrete(4)`: `0` up (row − 1), `1` down (row + 1), `2` left
//! (column − 1), `3` right (column + 1). A move into a wall or off the grid
//! leaves the agent where it is (the step still counts). There is no
//! randomness within an episode: `reset` puts the agent on the start cell, and
//! its seed has nothing to draw (the layout depends on `maze_seed` only).
//!
//! Reward: `1.0` on the step that enters the exit (`terminated = true`), and
//! `-step_cost` on every other step (`step_cost` defaults to `0.0`). So an
//! episode that reaches the exit after `L` steps returns `1 − (L − 1)·step_cost`.
//!
//! Time limit: `truncated = elapsed >= max_episode_steps`, as Gymnasium's
//! `TimeLimit` (both flags are set when the exit is entered on the last allowed
//! step; `terminated` is what matters for bootstrapping). The default limit is
//! `4 × H × W` steps (256 for the default 8 × 8 maze). A limit shorter than the
//! shortest path to the exit is rejected, since the exit could never be reached.
//!
//! Stepping after the episode ended changes nothing: it returns reward `0.0`
//! with the flags of the final step (call `reset`).
//!
//! # Observation
//!
//! `Box([0, 1], H·W + 4)`, all entries 0.0 or 1.0:
//!
//! | index            | meaning                                                        |
//! |------------------|----------------------------------------------------------------|
//! | `0 .. H·W`       | one-hot of the agent's cell, index `row · W + column`          |
//! | `H·W + 0`        | 1.0 if moving up is blocked (wall or edge)                     |
//! | `H·W + 1`        | 1.0 if moving down is blocked                                  |
//! | `H·W + 2`        | 1.0 if moving left is blocked                                  |
//! | `H·W + 3`        | 1.0 if moving right is blocked                                 |
//!
//! For a layout, `H × W` counts every character cell, walls included (their
//! entries are never hot). For a generated maze it is `size × size`.
//!
//! ## Image observation (`observation = "image"`)
//!
//! `Box([0, 255], [3, 2H + 1, 2W + 1])`, channels first, every entry 0.0 or
//! 255.0 (pixel values, for a convolutional torso with
//! `observation_scale = 1/255`): the grid drawn one pixel per cell and one
//! per wall between cells. Cell `(row, column)` is pixel
//! `(2·row + 1, 2·column + 1)`; the pixel between two neighbouring cells is a
//! wall when the move between them is blocked; the border and the pixels at
//! even row and even column (where walls meet) are walls; a layout's `#`
//! cell is a wall pixel. Channel 0 holds the walls, channel 1 the agent's
//! cell, channel 2 the exit's cell. An 8 × 8 maze is a `3 × 17 × 17` image.
//!
//! # Configuration
//!
//! ```toml
//! [env]
//! id = "Maze-v0"
//! size = 8                 # generated maze: size × size cells, 2..=64
//! maze_seed = 0            # generated maze: the layout's seed
//! # layout = """           # or a hand-written maze (then no size / maze_seed)
//! #   S..#
//! #   ##.#
//! #   G...
//! # """
//! step_cost = 0.0          # subtracted on each step that does not reach the exit
//! max_episode_steps = 256  # default 4 × H × W
//! observation = "vector"   # or "image" (see above)
//! ```

use std::collections::VecDeque;

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use serde::Deserialize;

use super::{config_error, Env, EnvError, Step};
use crate::render::{Colour, Frame};
use crate::space::{ActionRef, Space};

pub const ID: &str = "Maze-v0";

/// The largest maze, in cells (`H × W`), either source.
pub const MAX_CELLS: usize = 4096;
/// Side of the generated maze when neither `size` nor `layout` is given.
pub const DEFAULT_SIZE: usize = 8;
/// Smallest and largest `size` of a generated maze.
pub const SIZE_RANGE: (usize, usize) = (2, 64);

/// Action indices.
pub const UP: usize = 0;
pub const DOWN: usize = 1;
pub const LEFT: usize = 2;
pub const RIGHT: usize = 3;

/// All four directions blocked.
const ALL_BLOCKED: u8 = 0b1111;

/// Configuration of `Maze-v0` (see the module documentation).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MazeConfig {
    /// Side of the generated maze in cells (default [`DEFAULT_SIZE`]); not with `layout`.
    pub size: Option<usize>,
    /// Seed of the maze generator (default 0); not with `layout`.
    pub maze_seed: Option<u64>,
    /// A hand-written maze instead of a generated one.
    pub layout: Option<String>,
    /// Subtracted from the reward of every step that does not reach the exit; ≥ 0.
    pub step_cost: f32,
    /// Time limit; `None` means `4 × H × W`.
    pub max_episode_steps: Option<u32>,
    /// What the agent observes.
    pub observation: MazeObservation,
}

/// The two observation modes of `Maze-v0` (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MazeObservation {
    /// One-hot position and the four blocked moves.
    #[default]
    Vector,
    /// The grid as a `3 × (2H + 1) × (2W + 1)` image.
    Image,
}

/// Value of a lit pixel of the image observation.
pub const PIXEL_ON: f32 = 255.0;

impl Default for MazeConfig {
    fn default() -> Self {
        MazeConfig {
            size: None,
            maze_seed: None,
            layout: None,
            step_cost: 0.0,
            max_episode_steps: None,
            observation: MazeObservation::Vector,
        }
    }
}

/// The maze environment.
#[derive(Debug, Clone)]
pub struct Maze {
    height: usize,
    width: usize,
    /// Per cell: bit `d` set when action `d` is blocked from that cell.
    blocked: Vec<u8>,
    /// Per cell: a `#` wall cell of a layout; `None` for a generated maze.
    wall_cells: Option<Vec<bool>>,
    start: usize,
    goal: usize,
    shortest: usize,
    step_cost: f32,
    max_episode_steps: u32,
    pos: usize,
    elapsed: u32,
    /// The final step's flags once the episode has ended.
    ended: Option<(bool, bool)>,
    /// Image observations: the walls and exit channels, drawn once; the
    /// agent's channel is empty.
    image: Option<Vec<f32>>,
    observation_space: Space,
    action_space: Space,
}

impl Maze {
    pub fn new(cfg: MazeConfig) -> Result<Self, EnvError> {
        if !cfg.step_cost.is_finite() || cfg.step_cost < 0.0 {
            return Err(config_error(
                ID,
                format!(
                    "step_cost must be a finite number >= 0.0, got {}",
                    cfg.step_cost
                ),
            ));
        }
        let (height, width, blocked, wall_cells, start, goal) = match &cfg.layout {
            Some(text) => {
                if cfg.size.is_some() || cfg.maze_seed.is_some() {
                    return Err(config_error(
                        ID,
                        "layout cannot be combined with size or maze_seed: give either a \
                         layout, or size and maze_seed for a generated maze",
                    ));
                }
                let l = parse_layout(text).map_err(|m| config_error(ID, m))?;
                (l.height, l.width, l.blocked, Some(l.walls), l.start, l.goal)
            }
            None => {
                let size = cfg.size.unwrap_or(DEFAULT_SIZE);
                if !(SIZE_RANGE.0..=SIZE_RANGE.1).contains(&size) {
                    return Err(config_error(
                        ID,
                        format!(
                            "size must be between {} and {}, got {size}",
                            SIZE_RANGE.0, SIZE_RANGE.1
                        ),
                    ));
                }
                let blocked = generate(size, cfg.maze_seed.unwrap_or(0));
                (size, size, blocked, None, 0, size * size - 1)
            }
        };
        let cells = height * width;
        let shortest = bfs(width, &blocked, start)[goal];
        debug_assert!(shortest != usize::MAX, "validated: the goal is reachable");
        let max_episode_steps = match cfg.max_episode_steps {
            // MAX_CELLS keeps this far below u32::MAX
            None => 4 * cells as u32,
            Some(m) if (m as usize) < shortest => {
                return Err(config_error(
                    ID,
                    format!(
                        "max_episode_steps must be at least the length of the shortest path \
                         to the exit ({shortest} steps), or the exit could never be reached; \
                         got {m}"
                    ),
                ))
            }
            Some(m) => m,
        };
        let mut maze = Maze {
            height,
            width,
            blocked,
            wall_cells,
            start,
            goal,
            shortest,
            step_cost: cfg.step_cost,
            max_episode_steps,
            pos: start,
            elapsed: 0,
            ended: None,
            image: None,
            observation_space: Space::uniform_box(0.0, 1.0, cells + 4),
            action_space: Space::Discrete { n: 4 },
        };
        if cfg.observation == MazeObservation::Image {
            maze.observation_space = Space::pixels(vec![3, 2 * height + 1, 2 * width + 1]);
            maze.image = Some(maze.draw_static());
        }
        Ok(maze)
    }

    /// The image observation's wall and exit channels (the agent's empty).
    fn draw_static(&self) -> Vec<f32> {
        let (ih, iw) = (2 * self.height + 1, 2 * self.width + 1);
        let mut img = vec![0.0; 3 * ih * iw];
        // Everything starts as wall; cells and open passages are cleared.
        img[..ih * iw].fill(PIXEL_ON);
        for cell in 0..self.height * self.width {
            let (r, c) = self.rc(cell);
            let (y, x) = (2 * r + 1, 2 * c + 1);
            if self.wall_cells.as_ref().is_some_and(|walls| walls[cell]) {
                continue;
            }
            img[y * iw + x] = 0.0;
            let b = self.blocked[cell];
            if b & (1 << RIGHT) == 0 {
                img[y * iw + x + 1] = 0.0;
            }
            if b & (1 << DOWN) == 0 {
                img[(y + 1) * iw + x] = 0.0;
            }
        }
        let (r, c) = self.rc(self.goal);
        img[2 * ih * iw + (2 * r + 1) * iw + 2 * c + 1] = PIXEL_ON;
        img
    }

    /// The agent's cell, `(row, column)`.
    pub fn position(&self) -> (usize, usize) {
        self.rc(self.pos)
    }

    /// The start cell, `(row, column)`.
    pub fn start(&self) -> (usize, usize) {
        self.rc(self.start)
    }

    /// The exit cell, `(row, column)`.
    pub fn goal(&self) -> (usize, usize) {
        self.rc(self.goal)
    }

    /// Grid rows (`H`).
    pub fn height(&self) -> usize {
        self.height
    }

    /// Grid columns (`W`).
    pub fn width(&self) -> usize {
        self.width
    }

    /// The time limit in force.
    pub fn max_episode_steps(&self) -> u32 {
        self.max_episode_steps
    }

    /// Steps taken in the current episode.
    pub fn elapsed_steps(&self) -> u32 {
        self.elapsed
    }

    /// Whether action `action` is blocked from cell `(row, column)`.
    ///
    /// # Panics
    /// If the cell is off the grid or `action >= 4`.
    pub fn is_blocked(&self, (row, col): (usize, usize), action: usize) -> bool {
        assert!(row < self.height && col < self.width && action < 4);
        self.blocked[row * self.width + col] & (1 << action) != 0
    }

    /// Number of steps of the shortest path from the start to the exit.
    pub fn shortest_path_len(&self) -> usize {
        self.shortest
    }

    /// The actions of one shortest path from the start to the exit (found by
    /// breadth-first search; ties broken in action order).
    pub fn shortest_path_actions(&self) -> Vec<usize> {
        let to_goal = bfs(self.width, &self.blocked, self.goal);
        let mut cell = self.start;
        let mut actions = Vec::with_capacity(self.shortest);
        while cell != self.goal {
            let (a, next) = (0..4)
                .filter(|&a| self.blocked[cell] & (1 << a) == 0)
                .map(|a| (a, self.neighbour(cell, a)))
                .find(|&(_, n)| to_goal[n] + 1 == to_goal[cell])
                .expect("every reachable cell has a neighbour closer to the exit");
            actions.push(a);
            cell = next;
        }
        actions
    }

    /// An ASCII picture of the maze, one line per text row, each ending in `\n`.
    ///
    /// `A` is the agent, `S` the start and `G` the exit (`A` wins where they
    /// coincide). A layout is drawn as written (`#` walls, `.` free cells).
    /// A generated maze is drawn with corners `+`, walls `-` and `|` between
    /// cells and a space for a free cell or an open passage:
    ///
    /// ```text
    /// +-+-+
    /// |A  |
    /// +-+ +
    /// |  G|
    /// +-+-+
    /// ```
    pub fn render(&self) -> String {
        let cell_char = |c: usize, free: char| {
            if c == self.pos {
                'A'
            } else if c == self.goal {
                'G'
            } else if c == self.start {
                'S'
            } else {
                free
            }
        };
        let mut s = String::new();
        match &self.wall_cells {
            Some(walls) => {
                for (c, &wall) in walls.iter().enumerate() {
                    s.push(if wall { '#' } else { cell_char(c, '.') });
                    if (c + 1) % self.width == 0 {
                        s.push('\n');
                    }
                }
            }
            None => {
                s.push('+');
                for _ in 0..self.width {
                    s.push_str("-+");
                }
                s.push('\n');
                for r in 0..self.height {
                    s.push('|');
                    for c in r * self.width..(r + 1) * self.width {
                        s.push(cell_char(c, ' '));
                        s.push(if self.blocked[c] & (1 << RIGHT) != 0 {
                            '|'
                        } else {
                            ' '
                        });
                    }
                    s.push_str("\n+");
                    for c in r * self.width..(r + 1) * self.width {
                        s.push(if self.blocked[c] & (1 << DOWN) != 0 {
                            '-'
                        } else {
                            ' '
                        });
                        s.push('+');
                    }
                    s.push('\n');
                }
            }
        }
        s
    }

    fn rc(&self, cell: usize) -> (usize, usize) {
        (cell / self.width, cell % self.width)
    }

    /// The cell one move away; only valid when the move is not blocked (the
    /// grid edge always is).
    fn neighbour(&self, cell: usize, action: usize) -> usize {
        step_cell(self.width, cell, action)
    }

    fn write_obs(&self, obs: &mut [f32]) {
        if let Some(image) = &self.image {
            assert_eq!(
                obs.len(),
                image.len(),
                "{ID}: observation buffer has the wrong length"
            );
            obs.copy_from_slice(image);
            let iw = 2 * self.width + 1;
            let (r, c) = self.rc(self.pos);
            obs[image.len() / 3 + (2 * r + 1) * iw + 2 * c + 1] = PIXEL_ON;
            return;
        }
        let cells = self.height * self.width;
        assert_eq!(
            obs.len(),
            cells + 4,
            "{ID}: observation buffer has the wrong length"
        );
        obs.fill(0.0);
        obs[self.pos] = 1.0;
        let b = self.blocked[self.pos];
        for (d, o) in obs[cells..].iter_mut().enumerate() {
            *o = f32::from((b >> d) & 1);
        }
    }
}

impl Env for Maze {
    /// The grid, 24 px a cell: walls (between cells of a generated maze,
    /// whole cells of a layout), the exit in green, the agent in blue.
    fn render(&self) -> Option<Frame> {
        let cell = 24.0;
        let (w, h) = (self.width, self.height);
        let mut f = Frame::new(w * cell as usize + 2, h * cell as usize + 2);
        let corner = |i: usize| (1.0 + (i % w) as f64 * cell, 1.0 + (i / w) as f64 * cell);
        let (gx, gy) = corner(self.goal);
        f.rect(gx, gy, gx + cell, gy + cell, Colour::Goal);
        for i in 0..w * h {
            let (x, y) = corner(i);
            if self.wall_cells.as_ref().is_some_and(|walls| walls[i]) {
                f.rect(x, y, x + cell, y + cell, Colour::Wall);
                continue;
            }
            let b = self.blocked[i];
            let edges = [
                (UP, (x, y), (x + cell, y)),
                (DOWN, (x, y + cell), (x + cell, y + cell)),
                (LEFT, (x, y), (x, y + cell)),
                (RIGHT, (x + cell, y), (x + cell, y + cell)),
            ];
            for (d, a, z) in edges {
                if b & (1 << d) != 0 && self.wall_cells.is_none() {
                    f.line(a, z, 2.0, Colour::Wall);
                }
            }
        }
        let (ax, ay) = corner(self.pos);
        f.disc(
            (ax + cell / 2.0, ay + cell / 2.0),
            cell / 3.0,
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

    fn reset(&mut self, _seed: Option<u64>, obs: &mut [f32]) {
        // Nothing random within an episode: the seed has nothing to draw.
        self.pos = self.start;
        self.elapsed = 0;
        self.ended = None;
        self.write_obs(obs);
    }

    fn step(&mut self, action: ActionRef<'_>, obs: &mut [f32]) -> Step {
        let a = match action {
            ActionRef::Discrete(a) if a < 4 => a,
            other => panic!("{ID}: action {other:?} is outside the action space Discrete(4)"),
        };
        if let Some((terminated, truncated)) = self.ended {
            self.write_obs(obs);
            return Step {
                reward: 0.0,
                terminated,
                truncated,
            };
        }
        if self.blocked[self.pos] & (1 << a) == 0 {
            self.pos = self.neighbour(self.pos, a);
        }
        self.elapsed = self.elapsed.saturating_add(1);
        let terminated = self.pos == self.goal;
        let truncated = self.elapsed >= self.max_episode_steps;
        if terminated || truncated {
            self.ended = Some((terminated, truncated));
        }
        self.write_obs(obs);
        Step {
            // `0.0 - cost` rather than `-cost`: no negative zero when the cost is 0
            reward: if terminated {
                1.0
            } else {
                0.0 - self.step_cost
            },
            terminated,
            truncated,
        }
    }
}

/// The cell one move from `cell` (the caller has checked it is on the grid).
fn step_cell(width: usize, cell: usize, action: usize) -> usize {
    match action {
        UP => cell - width,
        DOWN => cell + width,
        LEFT => cell - 1,
        _ => cell + 1,
    }
}

/// The opposite direction.
fn opposite(action: usize) -> usize {
    action ^ 1
}

/// The neighbour of `cell` in direction `action` on an `height × width` grid,
/// if it is on the grid.
fn grid_neighbour(height: usize, width: usize, cell: usize, action: usize) -> Option<usize> {
    let (r, c) = (cell / width, cell % width);
    let on_grid = match action {
        UP => r > 0,
        DOWN => r + 1 < height,
        LEFT => c > 0,
        _ => c + 1 < width,
    };
    on_grid.then(|| step_cell(width, cell, action))
}

/// Carves a perfect maze on a `size × size` grid by randomised depth-first
/// search from cell 0; returns the per-cell blocked-move bits.
fn generate(size: usize, seed: u64) -> Vec<u8> {
    let n = size * size;
    let mut blocked = vec![ALL_BLOCKED; n];
    let mut visited = vec![false; n];
    let mut rng = Pcg64Mcg::seed_from_u64(seed);
    let mut stack = Vec::with_capacity(n);
    visited[0] = true;
    stack.push(0usize);
    while let Some(&cell) = stack.last() {
        let mut options = [(0usize, 0usize); 4];
        let mut k = 0;
        for a in 0..4 {
            if let Some(nb) = grid_neighbour(size, size, cell, a) {
                if !visited[nb] {
                    options[k] = (a, nb);
                    k += 1;
                }
            }
        }
        if k == 0 {
            stack.pop();
            continue;
        }
        let (a, nb) = options[rng.random_range(0..k)];
        blocked[cell] &= !(1 << a);
        blocked[nb] &= !(1 << opposite(a));
        visited[nb] = true;
        stack.push(nb);
    }
    blocked
}

/// Breadth-first distances (in steps) from `from`; `usize::MAX` where unreachable.
fn bfs(width: usize, blocked: &[u8], from: usize) -> Vec<usize> {
    let mut dist = vec![usize::MAX; blocked.len()];
    let mut queue = VecDeque::with_capacity(blocked.len());
    dist[from] = 0;
    queue.push_back(from);
    while let Some(cell) = queue.pop_front() {
        for a in 0..4 {
            if blocked[cell] & (1 << a) == 0 {
                let nb = step_cell(width, cell, a);
                if dist[nb] == usize::MAX {
                    dist[nb] = dist[cell] + 1;
                    queue.push_back(nb);
                }
            }
        }
    }
    dist
}

/// A parsed `layout` string.
#[derive(Debug)]
struct Layout {
    height: usize,
    width: usize,
    blocked: Vec<u8>,
    walls: Vec<bool>,
    start: usize,
    goal: usize,
}

/// Parses and validates a `layout` string; errors are complete messages.
fn parse_layout(text: &str) -> Result<Layout, String> {
    const ACCEPTED: &str =
        "accepted characters are `#` (wall), `.` (free), `S` (start) and `G` (goal)";
    let rows: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .collect();
    if rows.is_empty() {
        return Err(format!(
            "layout is empty; write one row of cells per line, {ACCEPTED}"
        ));
    }
    let width = rows[0].chars().count();
    for (i, row) in rows.iter().enumerate() {
        let w = row.chars().count();
        if w != width {
            return Err(format!(
                "layout is not rectangular: row {} has {w} cells but row 1 has {width}; \
                 every row must have the same width",
                i + 1
            ));
        }
    }
    let height = rows.len();
    if height * width > MAX_CELLS {
        return Err(format!(
            "layout has {height} × {width} = {} cells; at most {MAX_CELLS} are accepted",
            height * width
        ));
    }
    let mut walls = Vec::with_capacity(height * width);
    let mut starts = Vec::new();
    let mut goals = Vec::new();
    for (r, row) in rows.iter().enumerate() {
        for (c, ch) in row.chars().enumerate() {
            match ch {
                '#' => walls.push(true),
                '.' => walls.push(false),
                'S' => {
                    starts.push(walls.len());
                    walls.push(false);
                }
                'G' => {
                    goals.push(walls.len());
                    walls.push(false);
                }
                other => {
                    return Err(format!(
                        "layout row {}, column {} has `{}`; {ACCEPTED}",
                        r + 1,
                        c + 1,
                        other.escape_debug()
                    ))
                }
            }
        }
    }
    for (name, what, found) in [("S", "start", &starts), ("G", "goal", &goals)] {
        if found.len() != 1 {
            return Err(format!(
                "layout must contain exactly one `{name}` ({what}), found {}",
                found.len()
            ));
        }
    }
    let (start, goal) = (starts[0], goals[0]);
    let blocked: Vec<u8> = (0..height * width)
        .map(|cell| {
            if walls[cell] {
                return ALL_BLOCKED;
            }
            (0..4).fold(0u8, |bits, a| {
                match grid_neighbour(height, width, cell, a) {
                    Some(nb) if !walls[nb] => bits,
                    _ => bits | (1 << a),
                }
            })
        })
        .collect();
    if bfs(width, &blocked, start)[goal] == usize::MAX {
        return Err(
            "layout's goal `G` is not reachable from its start `S` through free cells".to_owned(),
        );
    }
    Ok(Layout {
        height,
        width,
        blocked,
        walls,
        start,
        goal,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::make_env;

    /// A hand-written maze; the only path is right, right, down, down, left, left
    /// (6 steps), with a dead end at (2, 3).
    const HAND: &str = "S..#\n##.#\nG...";

    fn hand(step_cost: f32, max_episode_steps: Option<u32>) -> Maze {
        Maze::new(MazeConfig {
            layout: Some(HAND.to_owned()),
            step_cost,
            max_episode_steps,
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn image_observation_draws_walls_agent_and_exit() {
        let mut m = Maze::new(MazeConfig {
            layout: Some("S.\n#G".to_owned()),
            observation: MazeObservation::Image,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(m.observation_space().shape(), [3, 5, 5]);
        let mut obs = vec![-1.0; 75];
        m.reset(None, &mut obs);
        let channel = |obs: &[f32], ch: usize| -> Vec<String> {
            obs[ch * 25..(ch + 1) * 25]
                .chunks(5)
                .map(|row| {
                    row.iter()
                        .map(|&v| match v {
                            0.0 => '.',
                            PIXEL_ON => '#',
                            _ => '?',
                        })
                        .collect()
                })
                .collect()
        };
        // Worked by hand: cells at odd pixels, the wall cell (1, 0) filled,
        // the open passages right of S and below (0, 1).
        assert_eq!(
            channel(&obs, 0),
            ["#####", "#...#", "###.#", "###.#", "#####"]
        );
        assert_eq!(
            channel(&obs, 1),
            [".....", ".#...", ".....", ".....", "....."]
        );
        assert_eq!(
            channel(&obs, 2),
            [".....", ".....", ".....", "...#.", "....."]
        );
        m.step(ActionRef::Discrete(RIGHT), &mut obs);
        assert_eq!(
            channel(&obs, 1),
            [".....", "...#.", ".....", ".....", "....."]
        );
        assert_eq!(
            channel(&obs, 0),
            ["#####", "#...#", "###.#", "###.#", "#####"]
        );
        let s = m.step(ActionRef::Discrete(DOWN), &mut obs);
        assert!(s.terminated);
        assert_eq!(channel(&obs, 1), channel(&obs, 2));
        // A generated 8x8 maze is a 3x17x17 image; the vector mode is unchanged.
        let g = Maze::new(MazeConfig {
            size: Some(8),
            observation: MazeObservation::Image,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(g.observation_space().shape(), [3, 17, 17]);
        assert_eq!(generated(8, 0).observation_space().shape(), [68]);
    }

    fn generated(size: usize, seed: u64) -> Maze {
        Maze::new(MazeConfig {
            size: Some(size),
            maze_seed: Some(seed),
            ..Default::default()
        })
        .unwrap()
    }

    fn obs_of(env: &Maze) -> Vec<f32> {
        vec![0.0; env.observation_space().flat_dim()]
    }

    fn err(cfg: MazeConfig) -> String {
        let Err(e) = Maze::new(cfg) else {
            panic!("the configuration was accepted")
        };
        assert!(matches!(e, EnvError::Config { env: ID, .. }), "{e:?}");
        e.to_string()
    }

    fn layout_err(layout: &str) -> String {
        err(MazeConfig {
            layout: Some(layout.to_owned()),
            ..Default::default()
        })
    }

    #[test]
    fn defaults() {
        let env = Maze::new(MazeConfig::default()).unwrap();
        assert_eq!((env.height(), env.width()), (8, 8));
        assert_eq!(env.start(), (0, 0));
        assert_eq!(env.goal(), (7, 7));
        assert_eq!(env.max_episode_steps(), 256);
        assert_eq!(env.observation_space().flat_dim(), 68);
        assert_eq!(env.action_space(), &Space::Discrete { n: 4 });
        assert_eq!(env.id(), ID);
        // the default is the generated maze with seed 0
        assert_eq!(env.blocked, generated(8, 0).blocked);
    }

    #[test]
    fn generator_makes_perfect_mazes() {
        for size in 2..=12 {
            for seed in 0..8 {
                let env = generated(size, seed);
                let n = size * size;
                // every cell reachable from the start ...
                let dist = bfs(size, &env.blocked, 0);
                assert!(dist.iter().all(|&d| d != usize::MAX), "{size} {seed}");
                // ... through exactly n - 1 passages: a spanning tree (no loops)
                let open: usize = env
                    .blocked
                    .iter()
                    .map(|b| 4 - b.count_ones() as usize)
                    .sum();
                assert_eq!(open, 2 * (n - 1), "size {size} seed {seed}");
                // walls are symmetric and the edge is closed
                for cell in 0..n {
                    for a in 0..4 {
                        let open = env.blocked[cell] & (1 << a) == 0;
                        match grid_neighbour(size, size, cell, a) {
                            None => assert!(!open),
                            Some(nb) => assert_eq!(open, env.blocked[nb] & (1 << opposite(a)) == 0),
                        }
                    }
                }
                // the exit is reachable, at least a Manhattan distance away
                assert_eq!(env.shortest_path_len(), dist[n - 1]);
                assert!(env.shortest_path_len() >= 2 * (size - 1));
            }
        }
    }

    #[test]
    fn same_seed_same_maze_different_seed_different_maze() {
        assert_eq!(generated(8, 3).blocked, generated(8, 3).blocked);
        assert_eq!(generated(8, 3).render(), generated(8, 3).render());
        assert_ne!(generated(8, 3).blocked, generated(8, 4).blocked);
        let mut all: Vec<Vec<u8>> = (0..20).map(|s| generated(8, s).blocked).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 20, "20 seeds give 20 different mazes");
    }

    #[test]
    fn layout_parses_positions_walls_and_limit() {
        let env = hand(0.0, None);
        assert_eq!((env.height(), env.width()), (3, 4));
        assert_eq!(env.start(), (0, 0));
        assert_eq!(env.goal(), (2, 0));
        assert_eq!(env.shortest_path_len(), 6);
        assert_eq!(env.max_episode_steps(), 4 * 12);
        assert_eq!(env.observation_space().flat_dim(), 16);
        assert!(env.is_blocked((0, 0), UP));
        assert!(env.is_blocked((0, 0), DOWN)); // wall cell below
        assert!(env.is_blocked((0, 0), LEFT));
        assert!(!env.is_blocked((0, 0), RIGHT));
        assert!(env.is_blocked((0, 2), RIGHT)); // '#'
        assert!(!env.is_blocked((0, 2), DOWN));
    }

    #[test]
    fn layout_tolerates_indentation_crlf_and_blank_lines() {
        let env = Maze::new(MazeConfig {
            layout: Some("\n    S..#\r\n    ##.#\r\n\n    G...  \n".to_owned()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(env.blocked, hand(0.0, None).blocked);
        assert_eq!(env.render(), "A..#\n##.#\nG...\n");
    }

    #[test]
    fn layout_errors_name_the_problem() {
        let m = layout_err("");
        assert!(m.contains("layout is empty") && m.contains("`#`"), "{m}");
        let m = layout_err(" \n\n ");
        assert!(m.contains("layout is empty"), "{m}");
        let m = layout_err("S..\n..\n..G");
        assert!(
            m.contains("not rectangular") && m.contains("row 2 has 2") && m.contains("row 1 has 3"),
            "{m}"
        );
        let m = layout_err("S.x\n..G");
        assert!(
            m.contains("row 1, column 3 has `x`") && m.contains("`.` (free)"),
            "{m}"
        );
        let m = layout_err("...\n..G");
        assert!(
            m.contains("exactly one `S`") && m.contains("found 0"),
            "{m}"
        );
        let m = layout_err("S.S\n..G");
        assert!(
            m.contains("exactly one `S`") && m.contains("found 2"),
            "{m}"
        );
        let m = layout_err("S..\n...");
        assert!(
            m.contains("exactly one `G`") && m.contains("found 0"),
            "{m}"
        );
        let m = layout_err("S.G\n..G");
        assert!(
            m.contains("exactly one `G`") && m.contains("found 2"),
            "{m}"
        );
        let m = layout_err("S#.\n##G");
        assert!(m.contains("not reachable"), "{m}");
        let big = format!("S{}\n{}G", ".".repeat(2048), ".".repeat(2048));
        let m = layout_err(&big);
        assert!(
            m.contains("4098 cells") && m.contains("at most 4096"),
            "{m}"
        );
        // the largest accepted layout is fine
        let ok = format!("S{}\n{}G", ".".repeat(2047), ".".repeat(2047));
        Maze::new(MazeConfig {
            layout: Some(ok),
            ..Default::default()
        })
        .unwrap();
    }

    #[test]
    fn config_errors_name_the_key() {
        let m = err(MazeConfig {
            size: Some(1),
            ..Default::default()
        });
        assert!(m.contains("size must be between 2 and 64, got 1"), "{m}");
        let m = err(MazeConfig {
            size: Some(65),
            ..Default::default()
        });
        assert!(m.contains("size must be between 2 and 64, got 65"), "{m}");
        for cost in [-0.1, f32::NAN, f32::INFINITY] {
            let m = err(MazeConfig {
                step_cost: cost,
                ..Default::default()
            });
            assert!(
                m.contains("step_cost must be a finite number >= 0.0"),
                "{m}"
            );
        }
        for (size, seed) in [(Some(4), None), (None, Some(1))] {
            let m = err(MazeConfig {
                layout: Some(HAND.to_owned()),
                size,
                maze_seed: seed,
                ..Default::default()
            });
            assert!(
                m.contains("layout cannot be combined with size or maze_seed"),
                "{m}"
            );
        }
        for max in [0, 5] {
            let m = err(MazeConfig {
                layout: Some(HAND.to_owned()),
                max_episode_steps: Some(max),
                ..Default::default()
            });
            assert!(
                m.contains("max_episode_steps") && m.contains("(6 steps)"),
                "{m}"
            );
        }
        let m = err(MazeConfig {
            max_episode_steps: Some(1),
            ..Default::default()
        });
        assert!(m.contains("max_episode_steps"), "{m}");
    }

    #[test]
    fn builds_from_toml_with_a_multiline_layout() {
        let spec: crate::env::EnvSpec = toml::from_str(
            "id = \"Maze-v0\"\nstep_cost = 0.5\nlayout = \"\"\"\n  S..#\n  ##.#\n  G...\n\"\"\"\n",
        )
        .unwrap();
        let mut env = spec.make().unwrap();
        assert_eq!(env.observation_space().flat_dim(), 16);
        let mut o = [0.0; 16];
        env.reset(Some(1), &mut o);
        let s = env.step(ActionRef::Discrete(UP), &mut o);
        assert_eq!(s.reward, -0.5);
        let mut t = toml::Table::new();
        t.insert("size".into(), toml::Value::Integer(5));
        t.insert("maze_seed".into(), toml::Value::Integer(9));
        assert_eq!(make_env(ID, &t).unwrap().observation_space().flat_dim(), 29);
    }

    #[test]
    fn moves_respect_walls_and_edges() {
        let mut env = hand(0.0, None);
        let mut o = obs_of(&env);
        env.reset(None, &mut o);
        // (action, expected position afterwards)
        let script = [
            (UP, (0, 0)),   // edge
            (LEFT, (0, 0)), // edge
            (DOWN, (0, 0)), // wall cell
            (RIGHT, (0, 1)),
            (DOWN, (0, 1)), // wall cell
            (RIGHT, (0, 2)),
            (RIGHT, (0, 2)), // wall
            (UP, (0, 2)),    // edge
            (DOWN, (1, 2)),
            (LEFT, (1, 2)), // wall
            (DOWN, (2, 2)),
            (RIGHT, (2, 3)), // dead end
            (RIGHT, (2, 3)), // edge
            (UP, (2, 3)),    // wall
            (LEFT, (2, 2)),
            (LEFT, (2, 1)),
            (UP, (2, 1)), // wall
        ];
        for (i, &(a, want)) in script.iter().enumerate() {
            let s = env.step(ActionRef::Discrete(a), &mut o);
            assert_eq!(env.position(), want, "step {i}");
            assert_eq!(
                s,
                Step {
                    reward: 0.0,
                    terminated: false,
                    truncated: false
                }
            );
            assert_eq!(env.elapsed_steps(), i as u32 + 1);
        }
        let s = env.step(ActionRef::Discrete(LEFT), &mut o);
        assert_eq!(env.position(), (2, 0));
        assert_eq!(
            s,
            Step {
                reward: 1.0,
                terminated: true,
                truncated: false
            }
        );
    }

    #[test]
    fn observation_is_position_one_hot_and_wall_sensors() {
        let mut env = hand(0.0, None);
        let mut o = obs_of(&env);
        env.reset(None, &mut o);
        let mut want = [0.0f32; 16];
        want[0] = 1.0;
        want[12..].copy_from_slice(&[1.0, 1.0, 1.0, 0.0]);
        assert_eq!(o, want);
        for a in [RIGHT, RIGHT, DOWN] {
            env.step(ActionRef::Discrete(a), &mut o);
        }
        // at (1, 2): up and down open, left and right walls
        let mut want = [0.0f32; 16];
        want[6] = 1.0;
        want[12..].copy_from_slice(&[0.0, 0.0, 1.0, 1.0]);
        assert_eq!(o, want);
        // a buffer full of garbage is fully overwritten
        let mut dirty = [7.0f32; 16];
        env.reset(None, &mut dirty);
        assert_eq!(dirty.iter().sum::<f32>(), 4.0);
    }

    #[test]
    fn exit_gives_one_and_terminates_and_step_cost_is_charged() {
        let mut env = hand(0.25, None);
        let mut o = obs_of(&env);
        env.reset(None, &mut o);
        let mut ret = 0.0;
        for (i, a) in [RIGHT, RIGHT, DOWN, DOWN, LEFT, LEFT]
            .into_iter()
            .enumerate()
        {
            let s = env.step(ActionRef::Discrete(a), &mut o);
            ret += s.reward;
            assert_eq!(s.terminated, i == 5);
            assert!(!s.truncated);
            assert_eq!(s.reward, if i == 5 { 1.0 } else { -0.25 });
        }
        assert_eq!(ret, 1.0 - 5.0 * 0.25);
        assert_eq!(o[8], 1.0); // cell (2, 0)
    }

    #[test]
    fn truncates_exactly_at_the_limit() {
        let mut env = hand(0.0, Some(7));
        let mut o = obs_of(&env);
        env.reset(None, &mut o);
        for t in 1..=7 {
            let s = env.step(ActionRef::Discrete(UP), &mut o);
            assert!(!s.terminated);
            assert_eq!(s.truncated, t == 7, "step {t}");
        }
        // reset starts over with a fresh clock
        env.reset(None, &mut o);
        assert_eq!(env.elapsed_steps(), 0);
        let s = env.step(ActionRef::Discrete(UP), &mut o);
        assert!(!s.truncated);
    }

    #[test]
    fn reaching_the_exit_on_the_last_allowed_step_sets_both_flags() {
        let mut env = hand(0.0, Some(6));
        let mut o = obs_of(&env);
        env.reset(None, &mut o);
        let mut last = None;
        for a in env.shortest_path_actions() {
            last = Some(env.step(ActionRef::Discrete(a), &mut o));
        }
        assert_eq!(
            last.unwrap(),
            Step {
                reward: 1.0,
                terminated: true,
                truncated: true
            }
        );
    }

    #[test]
    fn stepping_after_the_end_changes_nothing() {
        let mut env = hand(0.1, None);
        let mut o = obs_of(&env);
        env.reset(None, &mut o);
        for a in env.shortest_path_actions() {
            env.step(ActionRef::Discrete(a), &mut o);
        }
        let before = o.clone();
        let s = env.step(ActionRef::Discrete(RIGHT), &mut o);
        assert_eq!(
            s,
            Step {
                reward: 0.0,
                terminated: true,
                truncated: false
            }
        );
        assert_eq!(env.position(), (2, 0));
        assert_eq!(o, before);
        env.reset(None, &mut o);
        assert_eq!(env.position(), (0, 0));
    }

    #[test]
    fn bfs_optimal_actions_reach_the_exit_with_the_expected_return() {
        assert_eq!(
            hand(0.0, None).shortest_path_actions(),
            vec![RIGHT, RIGHT, DOWN, DOWN, LEFT, LEFT]
        );
        for seed in 0..10 {
            let cost = 0.01;
            let mut env = Maze::new(MazeConfig {
                maze_seed: Some(seed),
                step_cost: cost,
                ..Default::default()
            })
            .unwrap();
            let mut o = obs_of(&env);
            env.reset(Some(seed), &mut o);
            let actions = env.shortest_path_actions();
            assert_eq!(actions.len(), env.shortest_path_len());
            let mut ret = 0.0f64;
            for (i, &a) in actions.iter().enumerate() {
                let s = env.step(ActionRef::Discrete(a), &mut o);
                ret += f64::from(s.reward);
                assert_eq!(s.terminated, i + 1 == actions.len(), "seed {seed} step {i}");
            }
            assert_eq!(env.position(), (7, 7));
            let want = 1.0 - (actions.len() - 1) as f64 * f64::from(cost);
            assert!((ret - want).abs() < 1e-5, "seed {seed}: {ret} vs {want}");
        }
    }

    #[test]
    fn reset_seed_does_not_change_the_layout() {
        let mut env = generated(6, 2);
        let before = env.blocked.clone();
        let mut a = obs_of(&env);
        let mut b = obs_of(&env);
        env.reset(Some(1), &mut a);
        env.reset(Some(99), &mut b);
        assert_eq!(a, b);
        assert_eq!(env.blocked, before);
    }

    #[test]
    fn render_draws_the_maze_and_the_agent() {
        let mut env = hand(0.0, None);
        let mut o = obs_of(&env);
        env.reset(None, &mut o);
        assert_eq!(env.render(), "A..#\n##.#\nG...\n");
        env.step(ActionRef::Discrete(RIGHT), &mut o);
        assert_eq!(env.render(), "SA.#\n##.#\nG...\n");

        let env = generated(2, 0);
        let r = env.render();
        let lines: Vec<&str> = r.lines().collect();
        assert_eq!(lines.len(), 5);
        assert!(lines.iter().all(|l| l.chars().count() == 5));
        assert_eq!(lines[0], "+-+-+");
        assert_eq!(lines[4], "+-+-+");
        assert_eq!(&lines[1][..2], "|A");
        assert_eq!(&lines[3][3..], "G|");
        // a 2 × 2 perfect maze has 3 passages: exactly one of the 4 inner walls stays
        let inner = [
            &lines[1][2..3],
            &lines[3][2..3],
            &lines[2][1..2],
            &lines[2][3..4],
        ];
        assert_eq!(inner.iter().filter(|w| **w != " ").count(), 1, "{r}");
    }

    #[test]
    #[should_panic(expected = "outside the action space")]
    fn invalid_action_panics() {
        let mut env = hand(0.0, None);
        let mut o = obs_of(&env);
        env.reset(None, &mut o);
        env.step(ActionRef::Discrete(4), &mut o);
    }
}
