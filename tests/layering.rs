//! The layering rule, as a test: every module imports only modules on its own layer or below,
//! and no two files of `src/` import each other, directly or through others.
//!
//! The layer order is written once, in the fenced block under `## Layers` at the top of
//! ARCHITECTURE.md; this test parses that block, so the document cannot drift from the rule.
//! A top-level module of `src/` that the block does not name fails the test, and so does a name
//! in the block that is no module.
//!
//! How the source is read: comments (doc comments too), string and character literals are
//! skipped by a small lexer; then every `use` tree (`use crate::{a::b, c}` included) and every
//! path in code that starts with `crate::`, `self::`, `super::`, a child module or an imported
//! module is resolved to the file that defines the name it takes. A `pub use` facade is followed
//! to the file behind it, so `crate::storage::SledDisk` is an import of `storage/sled_disk.rs`,
//! not of `storage/mod.rs`. Importing a module by name (`use crate::inventory;`) takes nothing by
//! itself; the paths written through it later do. `src/main.rs` is the binary: its
//! `stockraft::...` paths are read as the library's `crate::...`.
//!
//! Circles are found at file level. A `mod.rs` re-exporting its own children (`pub use
//! child::Thing`) is a facade, not a use, so it does not put a child in a circle with its
//! parent; any other import between them does.
//!
//! What it deliberately does not do: expand macros, or tell the type and value namespaces apart
//! (a name is looked up in the module that defines it, whatever kind of item it is). An item a
//! macro declares (`declare_raft_types!`'s `TypeConfig`) is unknown by name, so a glob `pub use
//! child::*` cannot be followed to it: the import counts against the module that re-exports
//! it, and naming the item in an explicit `pub use child::{TypeConfig}` sends it to the child.
//! Code under `#[cfg(...)]`, tests included, counts whatever the configuration: an import the
//! simulation or a unit test makes is still an import.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Where the layer order is written down, relative to the package root.
const ARCHITECTURE_FILE: &str = "ARCHITECTURE.md";
/// The heading whose first fenced block is the layer order.
const LAYERS_HEADING: &str = "## Layers";
/// Separates a layer line's modules from the words that say what the layer is.
const LAYER_DESCRIPTION_MARK: char = '#';
/// Simple circles printed per group of files that import each other; a tangle with more than
/// this is already shown by the ones printed.
const CIRCLES_PRINTED_MAX: usize = 20;
/// `pub use` hops followed from one name; a chain longer than this would be a loop of
/// re-exports, which rustc rejects anyway.
const REEXPORT_HOPS_MAX: usize = 16;
/// The whole check must stay fast enough to run with every `cargo test`.
const CHECK_DURATION_MS_MAX: u128 = 1_000;

// ---------------------------------------------------------------------------------------------
// The layer order, from ARCHITECTURE.md.

#[derive(Debug, Clone)]
struct Layer {
    name: String,
    /// Top-level modules of `src/` (`api`, `raft`), or `main.rs` / `lib.rs` for the two roots.
    members: Vec<String>,
}

#[derive(Debug)]
struct Layers {
    /// Top to bottom: index 0 is the highest layer.
    order: Vec<Layer>,
}

impl Layers {
    /// Parses the first fenced block under [`LAYERS_HEADING`]: one line per layer, top to
    /// bottom, `name: member member ... # what it is`.
    fn parse(markdown: &str) -> Result<Self, String> {
        let block = layers_block(markdown)?;
        let mut order = Vec::new();
        for line in block.lines() {
            let line = line
                .split(LAYER_DESCRIPTION_MARK)
                .next()
                .unwrap_or_default()
                .trim();
            if line.is_empty() {
                continue;
            }
            let Some((name, members)) = line.split_once(':') else {
                return Err(format!(
                    "{ARCHITECTURE_FILE}, {LAYERS_HEADING}: the line `{line}` is not \
                     `name: module module ... {LAYER_DESCRIPTION_MARK} what it is`"
                ));
            };
            let members: Vec<String> = members.split_whitespace().map(String::from).collect();
            if members.is_empty() {
                return Err(format!(
                    "{ARCHITECTURE_FILE}, {LAYERS_HEADING}: layer `{}` names no module",
                    name.trim()
                ));
            }
            order.push(Layer {
                name: name.trim().to_string(),
                members,
            });
        }
        if order.is_empty() {
            return Err(format!(
                "{ARCHITECTURE_FILE}, {LAYERS_HEADING}: the fenced block names no layer"
            ));
        }
        Ok(Self { order })
    }

    /// The rank (0 = top) and name of the layer that holds `member`.
    fn of(&self, member: &str) -> Option<(usize, &str)> {
        self.order
            .iter()
            .enumerate()
            .find(|(_, layer)| layer.members.iter().any(|m| m == member))
            .map(|(rank, layer)| (rank, layer.name.as_str()))
    }
}

fn layers_block(markdown: &str) -> Result<&str, String> {
    let missing = || {
        format!(
            "{ARCHITECTURE_FILE} has no fenced block under `{LAYERS_HEADING}`: the layer order \
             is written there, one line per layer, top to bottom"
        )
    };
    let after_heading = markdown
        .lines()
        .position(|line| line.trim_end() == LAYERS_HEADING)
        .ok_or_else(missing)?;
    let mut offset = 0;
    let mut start = None;
    for (index, line) in markdown.lines().enumerate() {
        let line_start = offset;
        offset += line.len() + 1;
        if index <= after_heading {
            continue;
        }
        if line.trim_start().starts_with("```") {
            match start {
                None => start = Some(offset),
                Some(from) => return Ok(&markdown[from..line_start]),
            }
        } else if start.is_none() && line.starts_with("## ") {
            break;
        }
    }
    Err(missing())
}

// ---------------------------------------------------------------------------------------------
// A lexer that knows just enough Rust: comments, literals, words, `::`.

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// An identifier or keyword (raw identifiers without their `r#`).
    Word(String),
    PathSeparator,
    Punct(char),
    /// A string, character or number literal: its content is never read.
    Literal,
    Lifetime,
}

#[derive(Debug, Clone)]
struct Lexeme {
    token: Token,
    line: usize,
}

struct Lexer {
    chars: Vec<char>,
    at: usize,
    line: usize,
    out: Vec<Lexeme>,
}

fn lex(text: &str) -> Vec<Lexeme> {
    let mut lexer = Lexer {
        chars: text.chars().collect(),
        at: 0,
        line: 1,
        out: Vec::new(),
    };
    lexer.run();
    lexer.out
}

impl Lexer {
    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.at + ahead).copied()
    }

    fn push(&mut self, token: Token, line: usize) {
        self.out.push(Lexeme { token, line });
    }

    /// Moves one character on, counting lines.
    fn step(&mut self) {
        if self.peek(0) == Some('\n') {
            self.line += 1;
        }
        self.at += 1;
    }

    fn run(&mut self) {
        while let Some(c) = self.peek(0) {
            let line = self.line;
            match c {
                '/' if self.peek(1) == Some('/') => {
                    while self.peek(0).is_some_and(|c| c != '\n') {
                        self.step();
                    }
                }
                '/' if self.peek(1) == Some('*') => self.block_comment(),
                '"' => {
                    self.step();
                    self.string_rest();
                    self.push(Token::Literal, line);
                }
                '\'' => self.quote(line),
                ':' if self.peek(1) == Some(':') => {
                    self.at += 2;
                    self.push(Token::PathSeparator, line);
                }
                c if c.is_alphabetic() || c == '_' => self.word(line),
                c if c.is_ascii_digit() => {
                    while self
                        .peek(0)
                        .is_some_and(|c| c.is_alphanumeric() || c == '_')
                    {
                        self.step();
                    }
                    self.push(Token::Literal, line);
                }
                c if c.is_whitespace() => self.step(),
                c => {
                    self.step();
                    self.push(Token::Punct(c), line);
                }
            }
        }
    }

    fn block_comment(&mut self) {
        let mut depth = 0usize;
        while self.peek(0).is_some() {
            if self.peek(0) == Some('/') && self.peek(1) == Some('*') {
                depth += 1;
                self.at += 2;
            } else if self.peek(0) == Some('*') && self.peek(1) == Some('/') {
                depth -= 1;
                self.at += 2;
                if depth == 0 {
                    return;
                }
            } else {
                self.step();
            }
        }
    }

    /// The rest of a string after its opening quote, escapes included.
    fn string_rest(&mut self) {
        while let Some(c) = self.peek(0) {
            self.step();
            match c {
                '\\' => self.step(),
                '"' => return,
                _ => {}
            }
        }
    }

    /// The rest of a raw string after its `r`: `#`s, the quote, and up to the same closing.
    fn raw_string_rest(&mut self) {
        let mut hashes = 0;
        while self.peek(0) == Some('#') {
            hashes += 1;
            self.step();
        }
        self.step(); // the opening quote
        while let Some(c) = self.peek(0) {
            self.step();
            if c == '"' && (0..hashes).all(|ahead| self.peek(ahead) == Some('#')) {
                self.at += hashes;
                return;
            }
        }
    }

    /// A character literal (`'x'`, `'\n'`) or a lifetime / label (`'a`).
    fn quote(&mut self, line: usize) {
        if self.peek(1) == Some('\\') {
            self.at += 3;
            while self.peek(0).is_some_and(|c| c != '\'') {
                self.step();
            }
            self.step();
            self.push(Token::Literal, line);
        } else if self.peek(2) == Some('\'') {
            self.at += 3;
            self.push(Token::Literal, line);
        } else {
            self.step();
            while self
                .peek(0)
                .is_some_and(|c| c.is_alphanumeric() || c == '_')
            {
                self.step();
            }
            self.push(Token::Lifetime, line);
        }
    }

    /// A word, or one of the literal prefixes that look like one (`r"`, `r#"`, `b"`, `b'`,
    /// `br#"`, `c"`), or a raw identifier (`r#type`).
    fn word(&mut self, line: usize) {
        let start = self.at;
        while self
            .peek(0)
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
        {
            self.step();
        }
        let word: String = self.chars[start..self.at].iter().collect();
        let raw_prefix = matches!(word.as_str(), "r" | "br" | "cr");
        let next = self.peek(0);
        if raw_prefix && (next == Some('"') || (next == Some('#') && self.raw_string_ahead())) {
            self.raw_string_rest();
            self.push(Token::Literal, line);
        } else if word == "r" && next == Some('#') {
            self.step();
            let start = self.at;
            while self
                .peek(0)
                .is_some_and(|c| c.is_alphanumeric() || c == '_')
            {
                self.step();
            }
            let word = self.chars[start..self.at].iter().collect();
            self.push(Token::Word(word), line);
        } else if matches!(word.as_str(), "b" | "c") && next == Some('"') {
            self.step();
            self.string_rest();
            self.push(Token::Literal, line);
        } else if word == "b" && next == Some('\'') {
            self.quote(line);
        } else {
            self.push(Token::Word(word), line);
        }
    }

    /// After an `r`: `#`s followed by a quote (a raw string), not `#ident` (a raw identifier).
    fn raw_string_ahead(&self) -> bool {
        let mut ahead = 0;
        while self.peek(ahead) == Some('#') {
            ahead += 1;
        }
        self.peek(ahead) == Some('"')
    }
}

// ---------------------------------------------------------------------------------------------
// What one file says: its modules, the names it defines, its `use` leaves, its paths in code.

/// A module path from the crate root: `["raft", "network"]`; the root is `[]`.
type ModulePath = Vec<String>;

/// One leaf of a `use` tree, as written.
#[derive(Debug, Clone)]
struct UseLeaf {
    scope: ModulePath,
    segments: Vec<String>,
    /// The name it brings into scope (`None` for a glob or `as _`).
    alias: Option<String>,
    glob: bool,
    /// `pub use` (any visibility): a re-export.
    exported: bool,
    line: usize,
}

/// A path written in code (not in a `use`): `crate::a::b`, `super::x`, `child::y`.
#[derive(Debug, Clone)]
struct CodePath {
    scope: ModulePath,
    segments: Vec<String>,
    line: usize,
}

#[derive(Debug)]
struct SourceFile {
    /// Relative to the package root: `src/raft/mod.rs`.
    path: String,
    module: ModulePath,
    /// `src/main.rs`: a crate of its own, which names the library `stockraft::`.
    binary: bool,
    inline_modules: Vec<ModulePath>,
    definitions: BTreeMap<ModulePath, BTreeSet<String>>,
    uses: Vec<UseLeaf>,
    code_paths: Vec<CodePath>,
}

/// The library's name as the binary writes it.
const LIBRARY_NAME: &str = "stockraft";
/// Keywords that introduce a named item at module level.
/// Keywords that introduce a named item at module level (modules are known from the tree).
const ITEM_KEYWORDS: [&str; 8] = [
    "fn", "struct", "enum", "type", "trait", "const", "static", "union",
];

/// The module path of a file under `src/`, from its path relative to `src/`.
fn module_of(relative: &str) -> ModulePath {
    let trimmed = relative.trim_end_matches(".rs");
    let mut segments: Vec<String> = trimmed.split('/').map(String::from).collect();
    if matches!(segments.last().map(String::as_str), Some("mod" | "lib")) {
        segments.pop();
    }
    segments
}

fn read_source(path: &str, text: &str) -> SourceFile {
    let relative = path.trim_start_matches("src/");
    let binary = relative == "main.rs";
    let module = if binary {
        vec!["main.rs".to_string()]
    } else {
        module_of(relative)
    };
    let mut file = SourceFile {
        path: path.to_string(),
        module,
        binary,
        inline_modules: Vec::new(),
        definitions: BTreeMap::new(),
        uses: Vec::new(),
        code_paths: Vec::new(),
    };
    let lexemes = lex(text);
    Reader {
        lexemes: &lexemes,
        at: 0,
        braces: Vec::new(),
        file: &mut file,
    }
    .run();
    file
}

/// Walks one file's lexemes, keeping track of inline `mod name { ... }` scopes.
struct Reader<'a> {
    lexemes: &'a [Lexeme],
    at: usize,
    /// One entry per open brace: the module name when the brace opens an inline module.
    braces: Vec<Option<String>>,
    file: &'a mut SourceFile,
}

impl Reader<'_> {
    fn token(&self, ahead: usize) -> Option<&Token> {
        self.lexemes
            .get(self.at + ahead)
            .map(|lexeme| &lexeme.token)
    }

    fn word(&self, ahead: usize) -> Option<&str> {
        match self.token(ahead) {
            Some(Token::Word(word)) => Some(word),
            _ => None,
        }
    }

    fn previous(&self) -> Option<&Token> {
        self.at
            .checked_sub(1)
            .and_then(|index| self.lexemes.get(index))
            .map(|lexeme| &lexeme.token)
    }

    fn scope(&self) -> ModulePath {
        let mut scope = self.file.module.clone();
        scope.extend(self.braces.iter().flatten().cloned());
        scope
    }

    /// At module level: outside any brace, or directly inside an inline module's.
    fn at_module_level(&self) -> bool {
        matches!(self.braces.last(), None | Some(Some(_)))
    }

    fn run(&mut self) {
        while let Some(token) = self.token(0).cloned() {
            match token {
                Token::Punct('{') => {
                    self.braces.push(None);
                    self.at += 1;
                }
                Token::Punct('}') => {
                    self.braces.pop();
                    self.at += 1;
                }
                Token::Word(word) => self.on_word(&word),
                _ => self.at += 1,
            }
        }
    }

    fn on_word(&mut self, word: &str) {
        let starts_path = !matches!(
            self.previous(),
            Some(Token::PathSeparator | Token::Punct('$' | '.'))
        );
        if word == "use" && self.previous() != Some(&Token::Punct('+')) {
            self.use_item();
        } else if word == "mod" && self.token(2) == Some(&Token::Punct('{')) {
            let name = self.word(1).unwrap_or_default().to_string();
            let mut inline = self.scope();
            inline.push(name.clone());
            self.file.inline_modules.push(inline);
            self.braces.push(Some(name));
            self.at += 3;
        } else if self.at_module_level() && ITEM_KEYWORDS.contains(&word) {
            match self.word(1) {
                Some("fn") | None => {}
                Some(name) => {
                    let name = name.to_string();
                    self.define(&name);
                }
            }
            self.at += 1;
        } else if word == "macro_rules" && self.token(1) == Some(&Token::Punct('!')) {
            if let Some(name) = self.word(2).map(String::from) {
                self.define(&name);
            }
            self.at += 1;
        } else if starts_path && self.token(1) == Some(&Token::PathSeparator) {
            self.code_path();
        } else {
            self.at += 1;
        }
    }

    fn define(&mut self, name: &str) {
        let scope = self.scope();
        self.file
            .definitions
            .entry(scope)
            .or_default()
            .insert(name.to_string());
    }

    /// `word (:: word)*` in code.
    fn code_path(&mut self) {
        let line = self.lexemes[self.at].line;
        let mut segments = Vec::new();
        while let Some(word) = self.word(0) {
            segments.push(word.to_string());
            self.at += 1;
            if self.token(0) == Some(&Token::PathSeparator) && self.word(1).is_some() {
                self.at += 1;
            } else {
                break;
            }
        }
        let scope = self.scope();
        self.file.code_paths.push(CodePath {
            scope,
            segments,
            line,
        });
    }

    /// Whether the `use` at `self.at` has a visibility (`pub`, `pub(crate)`, `pub(super)`).
    fn use_is_exported(&self) -> bool {
        let mut index = self.at;
        let token = |index: usize| self.lexemes.get(index).map(|lexeme| &lexeme.token);
        if index >= 1 && token(index - 1) == Some(&Token::Punct(')')) {
            while index > 0 && token(index - 1) != Some(&Token::Punct('(')) {
                index -= 1;
            }
            index = index.saturating_sub(1);
        }
        index >= 1 && token(index - 1) == Some(&Token::Word("pub".into()))
    }

    fn use_item(&mut self) {
        let exported = self.use_is_exported();
        let scope = self.scope();
        self.at += 1;
        let mut leaves = Vec::new();
        self.use_tree(Vec::new(), &mut leaves);
        while self
            .token(0)
            .is_some_and(|token| token != &Token::Punct(';'))
        {
            self.at += 1;
        }
        self.at += 1;
        for leaf in leaves {
            self.file.uses.push(UseLeaf {
                scope: scope.clone(),
                exported,
                ..leaf
            });
        }
    }

    /// One use tree: `a::b`, `a::b as c`, `a::*`, `a::{...}`; its leaves go to `leaves`, their
    /// scope and visibility left for the caller to fill in.
    fn use_tree(&mut self, mut path: Vec<String>, leaves: &mut Vec<UseLeaf>) {
        loop {
            let line = self.lexemes.get(self.at).map_or(0, |lexeme| lexeme.line);
            match self.token(0).cloned() {
                Some(Token::PathSeparator) => self.at += 1,
                Some(Token::Word(word)) => {
                    path.push(word);
                    self.at += 1;
                    if self.token(0) == Some(&Token::PathSeparator) {
                        self.at += 1;
                        continue;
                    }
                    if path.last().map(String::as_str) == Some("self") {
                        path.pop();
                    }
                    let mut alias = path.last().cloned();
                    if self.word(0) == Some("as") {
                        alias = self.word(1).filter(|name| *name != "_").map(String::from);
                        self.at += 2;
                    }
                    leaves.push(UseLeaf {
                        scope: Vec::new(),
                        segments: path,
                        alias,
                        glob: false,
                        exported: false,
                        line,
                    });
                    return;
                }
                Some(Token::Punct('*')) => {
                    self.at += 1;
                    leaves.push(UseLeaf {
                        scope: Vec::new(),
                        segments: path,
                        alias: None,
                        glob: true,
                        exported: false,
                        line,
                    });
                    return;
                }
                Some(Token::Punct('{')) => {
                    self.at += 1;
                    while let Some(token) = self.token(0).cloned() {
                        match token {
                            Token::Punct('}') => {
                                self.at += 1;
                                return;
                            }
                            Token::Punct(',') => self.at += 1,
                            _ => self.use_tree(path.clone(), leaves),
                        }
                    }
                    return;
                }
                _ => return,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The crate: modules to files, names to the files that define them.

/// One import of one file by another, as written.
#[derive(Debug, Clone)]
struct Import {
    from: usize,
    to: usize,
    line: usize,
    /// The path as written in the source: `crate::raft::NodeId`, `super::run::RunReport`.
    written: String,
    /// A parent's `pub use` of its own descendant: the facade, not a use.
    facade: bool,
}

struct Crate {
    files: Vec<SourceFile>,
    /// Every module (file modules and inline ones) to the file that holds it.
    modules: BTreeMap<ModulePath, usize>,
}

impl Crate {
    fn new(files: Vec<SourceFile>) -> Self {
        let mut modules = BTreeMap::new();
        for (index, file) in files.iter().enumerate() {
            modules.insert(file.module.clone(), index);
            for inline in &file.inline_modules {
                modules.insert(inline.clone(), index);
            }
        }
        Self { files, modules }
    }

    fn file_of_module(&self, module: &[String]) -> Option<&SourceFile> {
        self.modules.get(module).map(|&index| &self.files[index])
    }

    fn uses_in<'a>(&'a self, scope: &'a [String]) -> impl Iterator<Item = &'a UseLeaf> {
        self.file_of_module(scope)
            .into_iter()
            .flat_map(|file| file.uses.iter())
            .filter(move |leaf| leaf.scope == scope)
    }

    fn defines(&self, module: &[String], name: &str) -> bool {
        self.file_of_module(module)
            .and_then(|file| file.definitions.get(module))
            .is_some_and(|names| names.contains(name))
    }

    /// The absolute module path of `segments` written in `scope` of `file`, or `None` when it
    /// leaves the crate (`std::`, another crate) or names a local item.
    fn absolute(
        &self,
        file: &SourceFile,
        scope: &[String],
        segments: &[String],
        hops: usize,
    ) -> Option<ModulePath> {
        let first = segments.first()?.as_str();
        if file.binary {
            return (first == LIBRARY_NAME).then(|| segments[1..].to_vec());
        }
        match first {
            "crate" => Some(segments[1..].to_vec()),
            "self" => Some(joined(scope, &segments[1..])),
            "super" => {
                let ups = segments.iter().take_while(|s| *s == "super").count();
                let base = scope.get(..scope.len().checked_sub(ups)?)?;
                Some(joined(base, &segments[ups..]))
            }
            _ if self.modules.contains_key(&joined(scope, &segments[..1])) => {
                Some(joined(scope, segments))
            }
            name => {
                let target = self.alias(file, scope, name, hops)?;
                Some(joined(&target, &segments[1..]))
            }
        }
    }

    /// What `name`, imported by a `use` in `scope` (or an enclosing inline scope of the same
    /// file), stands for.
    fn alias(
        &self,
        file: &SourceFile,
        scope: &[String],
        name: &str,
        hops: usize,
    ) -> Option<ModulePath> {
        if hops > REEXPORT_HOPS_MAX {
            return None;
        }
        let mut scope = scope.to_vec();
        loop {
            let leaf = file
                .uses
                .iter()
                .find(|leaf| leaf.scope == scope && leaf.alias.as_deref() == Some(name));
            if let Some(leaf) = leaf {
                return self.absolute(file, &leaf.scope, &leaf.segments, hops + 1);
            }
            if scope.len() <= file.module.len() {
                return None;
            }
            scope.pop();
        }
    }

    /// The file that defines the item `path` names (its last segment is an item, never a
    /// module: `crate::inventory::apply` is the function the facade re-exports, not the private
    /// module of the same name), through `pub use` facades to the definition.
    fn file_of_item(&self, path: &[String], hops: usize) -> usize {
        let depth = (0..path.len())
            .rev()
            .find(|&depth| self.modules.contains_key(&path[..depth]))
            .unwrap_or(0);
        let module = &path[..depth];
        let module_file = self.modules.get(module).copied().unwrap_or(0);
        let Some(name) = path.get(depth) else {
            return module_file;
        };
        if hops > REEXPORT_HOPS_MAX || self.defines(module, name) {
            return module_file;
        }
        let file = &self.files[module_file];
        for leaf in self.uses_in(module).filter(|leaf| leaf.exported) {
            let Some(target) = self.absolute(file, &leaf.scope, &leaf.segments, hops) else {
                continue;
            };
            if !leaf.glob && leaf.alias.as_deref() == Some(name.as_str()) {
                return self.file_of_item(&joined(&target, &path[depth + 1..]), hops + 1);
            }
            if leaf.glob && self.provides(&target, name) {
                let mut through = target;
                through.extend_from_slice(&path[depth..]);
                return self.file_of_item(&through, hops + 1);
            }
        }
        module_file
    }

    /// Whether `module` defines or re-exports `name` (for following glob re-exports).
    fn provides(&self, module: &[String], name: &str) -> bool {
        self.defines(module, name)
            || self
                .uses_in(module)
                .any(|leaf| leaf.exported && leaf.alias.as_deref() == Some(name))
    }

    /// Whether the module path `path` also names an item of its parent (a function re-exported
    /// under the name of the private module that defines it).
    fn provides_item(&self, path: &[String]) -> bool {
        path.split_last()
            .is_some_and(|(name, parent)| self.provides(parent, name))
    }

    fn imports(&self) -> Vec<Import> {
        let mut imports = Vec::new();
        for (from, file) in self.files.iter().enumerate() {
            for leaf in &file.uses {
                self.use_import(from, file, leaf, &mut imports);
            }
            for path in &file.code_paths {
                self.code_import(from, file, path, &mut imports);
            }
        }
        imports.retain(|import| import.from != import.to);
        imports
    }

    fn use_import(&self, from: usize, file: &SourceFile, leaf: &UseLeaf, out: &mut Vec<Import>) {
        let Some(target) = self.absolute(file, &leaf.scope, &leaf.segments, 0) else {
            return;
        };
        let names_module = self.modules.contains_key(&target);
        let to = if leaf.glob {
            self.modules.get(&target).copied()
        } else if !names_module || self.provides_item(&target) {
            Some(self.file_of_item(&target, 0))
        } else {
            // `use crate::inventory;` names a module: what is taken is read where it is used.
            None
        };
        let Some(to) = to else {
            return;
        };
        let written = if leaf.glob {
            format!("{}::*", leaf.segments.join("::"))
        } else {
            leaf.segments.join("::")
        };
        let facade = leaf.exported && target.starts_with(&leaf.scope) && target != leaf.scope;
        out.push(Import {
            from,
            to,
            line: leaf.line,
            written,
            facade,
        });
    }

    fn code_import(&self, from: usize, file: &SourceFile, path: &CodePath, out: &mut Vec<Import>) {
        let first = path.segments[0].as_str();
        let anchored = matches!(first, "crate" | "self" | "super")
            || (file.binary && first == LIBRARY_NAME)
            || self
                .modules
                .contains_key(&joined(&path.scope, &path.segments[..1]));
        // Through an imported module (`use crate::inventory;` then `inventory::apply`); a path
        // through an imported item (`Command::Reserve`) is the `use` already counted.
        let through_module = !anchored
            && self
                .alias(file, &path.scope, first, 0)
                .is_some_and(|target| self.modules.contains_key(&target));
        if !(anchored || through_module) {
            return;
        }
        let Some(target) = self.absolute(file, &path.scope, &path.segments, 0) else {
            return;
        };
        out.push(Import {
            from,
            to: self.file_of_item(&target, 0),
            line: path.line,
            written: path.segments.join("::"),
            facade: false,
        });
    }
}

fn joined(base: &[String], rest: &[String]) -> ModulePath {
    base.iter().chain(rest).cloned().collect()
}

// ---------------------------------------------------------------------------------------------
// The checks.

/// The layer member a file belongs to: its top-level module, or `lib.rs` / `main.rs`.
fn member_of(file: &SourceFile) -> String {
    if file.binary {
        "main.rs".to_string()
    } else {
        file.module
            .first()
            .cloned()
            .unwrap_or_else(|| "lib.rs".to_string())
    }
}

/// Modules of `src/` in no layer, and names in the layer block that are no module of `src/`.
fn unplaced_modules(layers: &Layers, krate: &Crate) -> Vec<String> {
    let mut problems = Vec::new();
    let mut members: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for file in &krate.files {
        members
            .entry(member_of(file))
            .or_default()
            .push(file.path.as_str());
    }
    for (member, files) in &members {
        if layers.of(member).is_none() {
            problems.push(format!(
                "module `{member}` ({}) is in no layer: add it to the line of its layer in \
                 {ARCHITECTURE_FILE} under `{LAYERS_HEADING}`",
                files.join(", ")
            ));
        }
    }
    let mut seen = BTreeSet::new();
    for layer in &layers.order {
        for member in &layer.members {
            if !members.contains_key(member) {
                problems.push(format!(
                    "layer `{}` names `{member}`, which is no module of src/: remove it from \
                     {ARCHITECTURE_FILE} or fix its spelling",
                    layer.name
                ));
            }
            if !seen.insert(member) {
                problems.push(format!(
                    "`{member}` is named by more than one layer in {ARCHITECTURE_FILE}"
                ));
            }
        }
    }
    problems
}

fn upward_imports(layers: &Layers, krate: &Crate, imports: &[Import]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut problems = Vec::new();
    for import in imports {
        let (from, to) = (&krate.files[import.from], &krate.files[import.to]);
        let (Some((from_rank, from_layer)), Some((to_rank, to_layer))) =
            (layers.of(&member_of(from)), layers.of(&member_of(to)))
        else {
            continue;
        };
        if to_rank >= from_rank || !seen.insert((import.from, import.written.clone())) {
            continue;
        }
        problems.push(format!(
            "{}:{} imports `{}` ({}), which is on layer `{to_layer}`, above its own layer \
             `{from_layer}`",
            from.path, import.line, import.written, to.path
        ));
    }
    problems
}

/// Files that import each other: each group (a strongly connected component of the file
/// graph), and in it each simple circle with the names taken along it.
fn circles(krate: &Crate, imports: &[Import]) -> Vec<String> {
    let mut edges: BTreeMap<usize, BTreeMap<usize, Vec<&Import>>> = BTreeMap::new();
    for import in imports.iter().filter(|import| !import.facade) {
        edges
            .entry(import.from)
            .or_default()
            .entry(import.to)
            .or_default()
            .push(import);
    }
    let successors: Vec<Vec<usize>> = (0..krate.files.len())
        .map(|file| {
            edges
                .get(&file)
                .map(|to| to.keys().copied().collect())
                .unwrap_or_default()
        })
        .collect();
    let mut problems = Vec::new();
    for group in strongly_connected(&successors) {
        if group.len() < 2 {
            continue;
        }
        let names: Vec<&str> = group
            .iter()
            .map(|&file| krate.files[file].path.as_str())
            .collect();
        let mut text = format!("these files import each other: {}", names.join(", "));
        let found = simple_circles(&successors, &group);
        for (number, circle) in found.iter().take(CIRCLES_PRINTED_MAX).enumerate() {
            let mut path: Vec<&str> = circle
                .iter()
                .map(|&file| krate.files[file].path.as_str())
                .collect();
            path.push(path[0]);
            let _ = write!(text, "\n    circle {}: {}", number + 1, path.join(" -> "));
            for pair in 0..circle.len() {
                let (from, to) = (circle[pair], circle[(pair + 1) % circle.len()]);
                let _ = write!(
                    text,
                    "\n        {} -> {} takes {}",
                    krate.files[from].path,
                    krate.files[to].path,
                    taken(&edges[&from][&to])
                );
            }
        }
        if found.len() > CIRCLES_PRINTED_MAX {
            let _ = write!(
                text,
                "\n    ... and {} more",
                found.len() - CIRCLES_PRINTED_MAX
            );
        }
        problems.push(text);
    }
    problems
}

/// `crate::a::B (line 3), super::c (line 9)`, each name once.
fn taken(imports: &[&Import]) -> String {
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    for import in imports {
        names.entry(&import.written).or_insert(import.line);
    }
    let names: Vec<String> = names
        .iter()
        .map(|(name, line)| format!("`{name}` (line {line})"))
        .collect();
    names.join(", ")
}

/// Tarjan's algorithm, iteratively: groups of nodes that reach each other.
fn strongly_connected(successors: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let count = successors.len();
    let mut index = vec![usize::MAX; count];
    let mut low = vec![0; count];
    let mut on_stack = vec![false; count];
    let mut stack = Vec::new();
    let mut groups = Vec::new();
    let mut next_index = 0;
    for root in 0..count {
        if index[root] != usize::MAX {
            continue;
        }
        let mut work = vec![(root, 0usize)];
        while let Some(&mut (node, ref mut child)) = work.last_mut() {
            if *child == 0 {
                index[node] = next_index;
                low[node] = next_index;
                next_index += 1;
                stack.push(node);
                on_stack[node] = true;
            }
            if let Some(&next) = successors[node].get(*child) {
                *child += 1;
                if index[next] == usize::MAX {
                    work.push((next, 0));
                } else if on_stack[next] {
                    low[node] = low[node].min(index[next]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[node]);
            }
            if low[node] == index[node] {
                let mut group = Vec::new();
                while let Some(member) = stack.pop() {
                    on_stack[member] = false;
                    group.push(member);
                    if member == node {
                        break;
                    }
                }
                group.sort_unstable();
                groups.push(group);
            }
        }
    }
    groups.sort();
    groups
}

/// The simple circles inside one group, each starting at its lowest file, at most one more
/// than [`CIRCLES_PRINTED_MAX`].
fn simple_circles(successors: &[Vec<usize>], group: &[usize]) -> Vec<Vec<usize>> {
    let mut found = Vec::new();
    for &start in group {
        let mut path = vec![start];
        extend_circles(successors, group, start, &mut path, &mut found);
    }
    found
}

fn extend_circles(
    successors: &[Vec<usize>],
    group: &[usize],
    start: usize,
    path: &mut Vec<usize>,
    found: &mut Vec<Vec<usize>>,
) {
    let last = *path.last().expect("a path holds its start");
    for &next in &successors[last] {
        if found.len() > CIRCLES_PRINTED_MAX {
            return;
        }
        if next == start {
            found.push(path.clone());
        } else if next > start && group.contains(&next) && !path.contains(&next) {
            path.push(next);
            extend_circles(successors, group, start, path, found);
            path.pop();
        }
    }
}

/// Everything wrong with `files` (path relative to the package root, text) against the layer
/// order in `architecture`, as one message per problem.
fn check(architecture: &str, files: &[(String, String)]) -> Result<Vec<String>, String> {
    let layers = Layers::parse(architecture)?;
    let mut files: Vec<&(String, String)> = files.iter().collect();
    files.sort();
    let sources = files
        .into_iter()
        .map(|(path, text)| read_source(path, text))
        .collect();
    let krate = Crate::new(sources);
    let imports = krate.imports();
    let mut problems = unplaced_modules(&layers, &krate);
    problems.extend(upward_imports(&layers, &krate, &imports));
    problems.extend(circles(&krate, &imports));
    Ok(problems)
}

fn report(problems: &[String]) -> String {
    let mut text = format!(
        "{} layering problem(s). The layer order is the block under `{LAYERS_HEADING}` in \
         {ARCHITECTURE_FILE}, top to bottom; a module may import modules on its own layer or \
         below, and no files may import each other in a circle. Fix the import, not the \
         order: move what both sides need down (shared ids live at the crate root), or have \
         the caller pass it in.\n",
        problems.len()
    );
    for problem in problems {
        let _ = writeln!(text, "\n  - {problem}");
    }
    text
}

// ---------------------------------------------------------------------------------------------
// The test of the real tree.

fn rust_files(directory: &Path, root: &Path, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(directory)
        .unwrap_or_else(|error| panic!("reading {}: {error}", directory.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, root, out);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
            let relative = path
                .strip_prefix(root)
                .expect("under the package root")
                .to_string_lossy()
                .replace('\\', "/");
            out.push((relative, text));
        }
    }
}

#[test]
fn every_module_imports_only_its_own_layer_or_below_and_no_files_import_each_other() {
    let started = Instant::now();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let architecture = std::fs::read_to_string(root.join(ARCHITECTURE_FILE))
        .unwrap_or_else(|error| panic!("reading {ARCHITECTURE_FILE}: {error}"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), root, &mut files);
    let problems = check(&architecture, &files).unwrap_or_else(|error| panic!("{error}"));
    assert!(problems.is_empty(), "{}", report(&problems));
    let elapsed = started.elapsed().as_millis();
    assert!(
        elapsed < CHECK_DURATION_MS_MAX,
        "the layering check took {elapsed} ms, more than {CHECK_DURATION_MS_MAX} ms"
    );
}

// ---------------------------------------------------------------------------------------------
// The checker's own tests, on small made-up trees.

const LAYERS_FOR_TESTS: &str = "# x\n\n## Layers\n\n```text\n\
    top:    main.rs high   # the edge\n\
    middle: middle          # in between\n\
    bottom: low lib.rs      # the floor\n\
    ```\n\n## Other\n";

/// Checks a made-up tree against [`LAYERS_FOR_TESTS`]; a tree without its own `src/lib.rs`
/// or `src/main.rs` gets a plain one.
fn check_tree(files: &[(&str, &str)]) -> Vec<String> {
    let mut files: Vec<(String, String)> = files
        .iter()
        .map(|(path, text)| (path.to_string(), text.to_string()))
        .collect();
    for (root, text) in [
        ("src/lib.rs", "pub mod high; pub mod middle; pub mod low;"),
        ("src/main.rs", "fn main() {}"),
    ] {
        if !files.iter().any(|(path, _)| path == root) {
            files.push((root.to_string(), text.to_string()));
        }
    }
    check(LAYERS_FOR_TESTS, &files).expect("the test layers parse")
}

#[test]
fn the_layer_block_is_read_top_to_bottom_without_its_descriptions() {
    let layers = Layers::parse(LAYERS_FOR_TESTS).expect("parses");
    let names: Vec<&str> = layers.order.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["top", "middle", "bottom"]);
    assert_eq!(layers.order[2].members, ["low", "lib.rs"]);
    assert_eq!(layers.of("high"), Some((0, "top")));
    assert!(Layers::parse("# no layers here\n").is_err());
}

#[test]
fn an_import_from_a_higher_layer_names_the_file_the_path_and_both_layers() {
    let problems = check_tree(&[
        ("src/high.rs", "pub struct Surface;"),
        ("src/middle.rs", "pub fn f() {}"),
        (
            "src/low/mod.rs",
            "mod inner;\n\nuse crate::high::Surface;\n",
        ),
        ("src/low/inner.rs", "pub fn g() { crate::middle::f() }"),
    ]);
    assert_eq!(
        problems,
        [
            "src/low/inner.rs:1 imports `crate::middle::f` (src/middle.rs), which is on layer \
             `middle`, above its own layer `bottom`",
            "src/low/mod.rs:3 imports `crate::high::Surface` (src/high.rs), which is on layer \
             `top`, above its own layer `bottom`",
        ]
    );
}

#[test]
fn comments_strings_and_characters_are_not_read_and_use_groups_are() {
    let problems = check_tree(&[
        ("src/high.rs", "pub struct A; pub struct B;"),
        (
            "src/middle.rs",
            "//! [`crate::high::A`] in a doc comment\n\
             /* crate::high::A /* nested */ crate::high::B */\n\
             const S: &str = \"crate::high::A\";\n\
             const R: &str = r#\"crate::high::\"B\"#;\n\
             const C: char = '\\'';\n\
             fn f<'a>(x: &'a str) {}\n\
             use crate::{low::{self, Thing as Other}, high::{A, B}};\n",
        ),
        ("src/low.rs", "pub struct Thing;"),
    ]);
    assert_eq!(
        problems,
        [
            "src/middle.rs:7 imports `crate::high::A` (src/high.rs), which is on layer `top`, \
             above its own layer `middle`",
            "src/middle.rs:7 imports `crate::high::B` (src/high.rs), which is on layer `top`, \
             above its own layer `middle`",
        ]
    );
}

#[test]
fn files_that_import_each_other_are_a_circle_with_the_names_taken() {
    let problems = check_tree(&[
        ("src/high.rs", ""),
        ("src/middle.rs", ""),
        (
            "src/low/mod.rs",
            "mod a;\nmod b;\npub use a::Alpha;\npub struct Root;\n",
        ),
        ("src/low/a.rs", "use super::b::Beta;\npub struct Alpha;"),
        (
            "src/low/b.rs",
            "pub struct Beta;\nfn f() { let _ = crate::low::Alpha; }",
        ),
    ]);
    assert_eq!(
        problems,
        [
            "these files import each other: src/low/a.rs, src/low/b.rs\n    \
          circle 1: src/low/a.rs -> src/low/b.rs -> src/low/a.rs\n        \
          src/low/a.rs -> src/low/b.rs takes `super::b::Beta` (line 1)\n        \
          src/low/b.rs -> src/low/a.rs takes `crate::low::Alpha` (line 2)"
        ]
    );
}

#[test]
fn a_parent_that_uses_its_child_and_is_used_by_it_is_a_circle_but_a_facade_is_not() {
    let facade_only = check_tree(&[
        ("src/high.rs", ""),
        ("src/middle.rs", ""),
        (
            "src/low/mod.rs",
            "mod a;\npub use a::Alpha;\npub struct Root;\n",
        ),
        ("src/low/a.rs", "use super::Root;\npub struct Alpha;"),
    ]);
    assert_eq!(facade_only, Vec::<String>::new());
    let parent_uses_child = check_tree(&[
        ("src/high.rs", ""),
        ("src/middle.rs", ""),
        (
            "src/low/mod.rs",
            "mod a;\npub struct Root(a::Alpha);\n#[cfg(test)]\nmod tests { use super::*; }\n",
        ),
        ("src/low/a.rs", "use super::Root;\npub struct Alpha;"),
    ]);
    assert_eq!(parent_uses_child.len(), 1, "{parent_uses_child:?}");
    assert!(
        parent_uses_child[0].contains("src/low/mod.rs -> src/low/a.rs takes `a::Alpha` (line 2)"),
        "{parent_uses_child:?}"
    );
}

#[test]
fn a_module_in_no_layer_and_a_layer_name_that_is_no_module_are_reported() {
    let problems = check_tree(&[
        ("src/lib.rs", "pub mod high; pub mod stray;"),
        ("src/high.rs", ""),
        ("src/stray.rs", ""),
        ("src/main.rs", "use stockraft::high;"),
    ]);
    assert_eq!(
        problems,
        [
            "module `stray` (src/stray.rs) is in no layer: add it to the line of its layer in \
             ARCHITECTURE.md under `## Layers`",
            "layer `middle` names `middle`, which is no module of src/: remove it from \
             ARCHITECTURE.md or fix its spelling",
            "layer `bottom` names `low`, which is no module of src/: remove it from \
             ARCHITECTURE.md or fix its spelling",
        ]
    );
}

#[test]
fn the_binary_reads_the_library_as_stockraft_and_shared_ids_sit_at_the_root() {
    let problems = check_tree(&[
        (
            "src/lib.rs",
            "pub mod high; pub mod middle; pub mod low;\npub type NodeId = u64;",
        ),
        (
            "src/main.rs",
            "use stockraft::low::Thing;\nfn main() { stockraft::high::run() }",
        ),
        ("src/high.rs", "pub fn run() {}"),
        ("src/middle.rs", "use crate::NodeId;"),
        ("src/low.rs", "pub struct Thing(crate::NodeId);"),
    ]);
    assert_eq!(problems, Vec::<String>::new());
}

#[test]
fn a_function_re_exported_under_its_private_modules_name_is_taken_from_that_file() {
    let problems = check_tree(&[
        ("src/high.rs", ""),
        ("src/middle.rs", "use crate::low;\nfn f() { low::apply() }"),
        (
            "src/low/mod.rs",
            "mod apply;\nmod other;\npub use apply::apply;\npub use other::Other;\n",
        ),
        ("src/low/apply.rs", "use super::Other;\npub fn apply() {}"),
        (
            "src/low/other.rs",
            "pub struct Other;\nfn f() { super::apply() }",
        ),
    ]);
    assert_eq!(
        problems,
        [
            "these files import each other: src/low/apply.rs, src/low/other.rs\n    \
          circle 1: src/low/apply.rs -> src/low/other.rs -> src/low/apply.rs\n        \
          src/low/apply.rs -> src/low/other.rs takes `super::Other` (line 1)\n        \
          src/low/other.rs -> src/low/apply.rs takes `super::apply` (line 2)"
        ]
    );
}
