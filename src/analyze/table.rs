//! The report table every analysis fills: a declared schema (the group, the analysis's own columns, then
//! the note and provenance columns every report shares) and rows that may leave columns out (null).
use polars::prelude::*;

use crate::error::{Error, Result};
use crate::report::columns as col;

/// A column's type: f64, i64 or string.
#[derive(Clone, Copy)]
pub(crate) enum Ty {
    F,
    I,
    S,
}

/// One cell of a row; `None` is null.
pub(crate) enum Val {
    F(Option<f64>),
    I(Option<i64>),
    S(Option<String>),
}

/// A float cell; NaN and ±∞ are written as null.
pub(crate) fn f(x: f64) -> Val {
    Val::F(x.is_finite().then_some(x))
}
/// An optional float cell, non-finite values null as in [`f`].
pub(crate) fn fo(x: Option<f64>) -> Val {
    Val::F(x.filter(|v| v.is_finite()))
}
/// A count cell.
pub(crate) fn i(x: usize) -> Val {
    Val::I(Some(x as i64))
}
/// A string cell.
pub(crate) fn s(x: impl Into<String>) -> Val {
    Val::S(Some(x.into()))
}

/// A report table with a declared schema; a row may leave columns out (null).
pub(crate) struct Table {
    pub(crate) schema: Vec<(&'static str, Ty)>,
    pub(crate) rows: Vec<Vec<(&'static str, Val)>>,
}

impl Table {
    pub(crate) fn new(specific: &[(&'static str, Ty)]) -> Self {
        let mut schema = vec![(col::DATASET, Ty::S)];
        schema.extend_from_slice(specific);
        schema.extend_from_slice(&[
            (col::NOTE, Ty::S),
            (col::GROUP_BY, Ty::S),
            (col::INPUT_FILE, Ty::S),
            (col::INPUT_SHA256, Ty::S),
            (col::SEED, Ty::I),
        ]);
        Table {
            schema,
            rows: Vec::new(),
        }
    }
    pub(crate) fn frame(&self) -> Result<DataFrame> {
        let mut cols = Vec::new();
        for (name, ty) in &self.schema {
            fn get<'a>(r: &'a [(&'static str, Val)], name: &str) -> Option<&'a Val> {
                r.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
            }
            let c = match ty {
                Ty::F => Column::new(
                    (*name).into(),
                    self.rows
                        .iter()
                        .map(|r| match get(r, name) {
                            Some(Val::F(v)) => *v,
                            _ => None,
                        })
                        .collect::<Vec<_>>(),
                ),
                Ty::I => Column::new(
                    (*name).into(),
                    self.rows
                        .iter()
                        .map(|r| match get(r, name) {
                            Some(Val::I(v)) => *v,
                            _ => None,
                        })
                        .collect::<Vec<_>>(),
                ),
                Ty::S => Column::new(
                    (*name).into(),
                    self.rows
                        .iter()
                        .map(|r| match get(r, name) {
                            Some(Val::S(v)) => v.clone(),
                            _ => None,
                        })
                        .collect::<Vec<_>>(),
                ),
            };
            cols.push(c);
        }
        DataFrame::new(self.rows.len(), cols).map_err(|e| Error::polars("building report", e))
    }
}
