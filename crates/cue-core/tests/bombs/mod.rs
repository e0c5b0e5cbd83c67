//! Hand-made automerge bombs for the inflate guard's tests: chunks whose
//! DEFLATE data inflates far past the limit, and run-length columns that
//! declare billions of rows in a few bytes.

#![allow(dead_code)]

use cue_core::limits::MAX_INFLATED_BYTES;

pub fn uleb(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

pub fn sleb(out: &mut Vec<u8>, mut v: i64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if (v == 0 && b & 0x40 == 0) || (v == -1 && b & 0x40 != 0) {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

pub fn chunk(kind: u8, data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, kind];
    uleb(&mut out, data.len() as u64);
    out.extend_from_slice(data);
    out
}

pub fn deflate(data: impl Iterator<Item = Vec<u8>>) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    for block in data {
        enc.write_all(&block).expect("deflate");
    }
    enc.finish().expect("deflate")
}

/// Zeros inflating to `bytes` (a deflate bomb: about 1,000 to 1).
pub fn zeros(bytes: u64) -> Vec<u8> {
    let block = vec![0u8; 1 << 20];
    deflate((0..bytes >> 20).map(move |_| block.clone()))
}

/// A change chunk body: no deps, actor, seq 1, start op 1, time 0, no
/// message, no other actors, then `cols` and their data.
pub fn change_body(cols: &[(u32, Vec<u8>)]) -> Vec<u8> {
    let mut out = vec![0, 16];
    out.extend_from_slice(&[7; 16]);
    out.extend_from_slice(&[1, 1, 0, 0, 0]);
    uleb(&mut out, cols.len() as u64);
    for (spec, data) in cols {
        uleb(&mut out, u64::from(*spec));
        uleb(&mut out, data.len() as u64);
    }
    for (_, data) in cols {
        out.extend_from_slice(data);
    }
    out
}

/// A document chunk body with no changes and these op columns.
pub fn document_body(op_cols: &[(u32, Vec<u8>)]) -> Vec<u8> {
    let mut out = vec![1, 16];
    out.extend_from_slice(&[7; 16]);
    out.push(0); // no heads
    out.push(0); // no change columns
    uleb(&mut out, op_cols.len() as u64);
    for (spec, data) in op_cols {
        uleb(&mut out, u64::from(*spec));
        uleb(&mut out, data.len() as u64);
    }
    for (_, data) in op_cols {
        out.extend_from_slice(data);
    }
    out
}

/// Spec of column `id` of `kind`, compressed or not.
pub fn spec(id: u32, kind: u32, deflated: bool) -> u32 {
    id << 4 | u32::from(deflated) << 3 | kind
}

pub fn deflate_bombs() -> Vec<(&'static str, Vec<u8>)> {
    let big = MAX_INFLATED_BYTES * 2;
    vec![
        // A compressed change (chunk type 2) whose body inflates to 192 MiB.
        ("compressed change", chunk(2, &zeros(big))),
        // A document whose value column (type 7) is DEFLATE of 192 MiB.
        (
            "document column",
            chunk(0, &document_body(&[(spec(5, 7, true), zeros(big))])),
        ),
    ]
}

pub fn run_bombs() -> Vec<(&'static str, Vec<u8>)> {
    // A run of 2^40 copies of one action (integer column 4).
    let mut run = Vec::new();
    sleb(&mut run, 1 << 40);
    uleb(&mut run, 1);
    // 2^50 nulls in a delta column.
    let mut nulls = vec![0];
    uleb(&mut nulls, 1 << 50);
    // 2^30 copies of a 1 KiB map key: few ops, but a terabyte of strings.
    let mut keys = Vec::new();
    sleb(&mut keys, 1 << 20);
    uleb(&mut keys, 1024);
    keys.extend_from_slice(&[b'k'; 1024]);
    // A billion booleans.
    let mut bools = Vec::new();
    uleb(&mut bools, 1 << 30);
    vec![
        (
            "change run",
            chunk(1, &change_body(&[(spec(4, 2, false), run.clone())])),
        ),
        (
            "document nulls",
            chunk(0, &document_body(&[(spec(2, 3, false), nulls)])),
        ),
        (
            "document strings",
            chunk(0, &document_body(&[(spec(1, 5, false), keys)])),
        ),
        (
            "change booleans",
            chunk(1, &change_body(&[(spec(3, 4, false), bools)])),
        ),
        // The run inside a compressed column of a document.
        (
            "compressed run",
            chunk(
                0,
                &document_body(&[(spec(4, 2, true), deflate([run].into_iter()))]),
            ),
        ),
    ]
}
