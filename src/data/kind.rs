//! The four kinds of data the bias experiments contrast: curated object-centric photos versus uncurated
//! scenes, cartoons and memes.
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetKind {
    /// One prominent object per image (ImageNet-like).
    Object,
    /// Full scenes with several objects or none in particular.
    Scene,
    /// Clipart, emoji, drawings.
    Cartoon,
    /// Image macros with overlaid text.
    Meme,
}

impl DatasetKind {
    pub const ALL: [DatasetKind; 4] = [Self::Object, Self::Scene, Self::Cartoon, Self::Meme];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Object => "object",
            Self::Scene => "scene",
            Self::Cartoon => "cartoon",
            Self::Meme => "meme",
        }
    }
}

impl std::fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for DatasetKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown kind `{s}` (expected object, scene, cartoon or meme)"))
    }
}
