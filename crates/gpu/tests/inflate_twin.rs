//! The decompressors of the heap page kernels (kernels/inflate.cuh)
//! compiled as C++ (tests/cpu_twin/inflate_twin.cpp, with the address and
//! undefined-behaviour sanitizers where the compiler has them) against the
//! CPU converter's (`varlena::decompress_append`: heap/pglz.rs, and
//! lz4_flex for LZ4): every valid stream gives the same bytes; truncated,
//! resized, corrupted and random streams are refused by both or give the
//! same bytes on both. Needs a C++ compiler (`c++`, or `$CXX`).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use gpupg_format::heap::sample::Rng;
use gpupg_format::heap::varlena::{decompress_append, CompressionMethod};
use gpupg_format::heap::{lz4, pglz};

fn twin() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // In the target's folder for tests' files (`cargo clean` removes
        // it), not in /tmp, where one folder per run piled up.
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("gpupg-inflate-twin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let bin = dir.join("inflate_twin");
        let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/cpu_twin/inflate_twin.cpp");
        let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
        let compile = |extra: &[&str]| {
            Command::new(&cxx)
                .args(["-std=c++17", "-O1", "-fno-strict-aliasing"])
                .args(extra)
                .arg("-o")
                .arg(&bin)
                .arg(&src)
                .output()
                .unwrap_or_else(|e| panic!("cannot run {cxx} (a C++ compiler is needed): {e}"))
        };
        let sanitized = compile(&[
            "-g",
            "-fsanitize=address,undefined",
            "-fno-sanitize-recover=all",
        ]);
        if !sanitized.status.success() {
            eprintln!("no sanitizers with {cxx}: the twin runs without them");
            let out = compile(&[]);
            assert!(
                out.status.success(),
                "compiling the decompressors' CPU twin failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        bin
    })
}

/// One compressed value: its method, the raw size its header claims, and
/// the compressed bytes.
#[derive(Clone)]
struct Case {
    method: CompressionMethod,
    rawsize: u32,
    data: Vec<u8>,
}

impl Case {
    fn pglz(payload: &[u8]) -> Case {
        Case {
            method: CompressionMethod::Pglz,
            rawsize: payload.len() as u32,
            data: pglz::compress(payload),
        }
    }

    fn lz4(payload: &[u8]) -> Case {
        Case {
            method: CompressionMethod::Lz4,
            rawsize: payload.len() as u32,
            data: lz4::compress(payload),
        }
    }

    fn raw(method: CompressionMethod, rawsize: u32, data: &[u8]) -> Case {
        Case {
            method,
            rawsize,
            data: data.to_vec(),
        }
    }

    /// The CPU converter's bytes, or `None` when it refuses the stream.
    fn cpu(&self) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        decompress_append(self.method, &self.data, self.rawsize as usize, &mut out)
            .ok()
            .map(|()| out)
    }
}

/// The twin's bytes for each case (`None`: refused).
fn run_twin(cases: &[Case]) -> Vec<Option<Vec<u8>>> {
    let mut input = Vec::new();
    input.extend_from_slice(&(cases.len() as u32).to_ne_bytes());
    for c in cases {
        let method: u32 = match c.method {
            CompressionMethod::Pglz => 0,
            CompressionMethod::Lz4 => 1,
        };
        for v in [method, c.rawsize, c.data.len() as u32] {
            input.extend_from_slice(&v.to_ne_bytes());
        }
        input.extend_from_slice(&c.data);
    }
    let mut child = Command::new(twin())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the twin");
    let mut stdin = child.stdin.take().expect("stdin");
    // Written from a thread: the twin's output may fill its pipe before
    // all the input is read.
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("the twin's output");
    writer.join().expect("writer").expect("write the cases");
    assert!(
        out.status.success(),
        "the twin failed ({:?}; exit 3: check and write disagree):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let o = out.stdout;
    let mut at = 0;
    let mut got = Vec::with_capacity(cases.len());
    for c in cases {
        let ok = o[at] == 1;
        at += 1;
        if ok {
            let n = c.rawsize as usize;
            got.push(Some(o[at..at + n].to_vec()));
            at += n;
        } else {
            got.push(None);
        }
    }
    assert_eq!(at, o.len(), "the twin wrote more than the cases");
    got
}

/// Asserts the twin and the CPU agree on every case; returns how many
/// both accepted and how many both refused.
fn compare(what: &str, cases: &[Case]) -> (usize, usize) {
    let got = run_twin(cases);
    let (mut accepted, mut refused) = (0, 0);
    for (k, (c, g)) in cases.iter().zip(&got).enumerate() {
        let want = c.cpu();
        match (&want, g) {
            (Some(w), Some(g)) => {
                assert!(
                    w == g,
                    "{what} case {k} ({:?}, raw {}): bytes differ",
                    c.method,
                    c.rawsize
                );
                accepted += 1;
            }
            (None, None) => refused += 1,
            _ => panic!(
                "{what} case {k} ({:?}, raw {}, {} bytes {:02x?}): the CPU {}, the twin {}",
                c.method,
                c.rawsize,
                c.data.len(),
                &c.data[..c.data.len().min(64)],
                if want.is_some() { "accepts" } else { "refuses" },
                if g.is_some() { "accepts" } else { "refuses" },
            ),
        }
    }
    eprintln!("{what}: {accepted} accepted by both, {refused} refused by both");
    (accepted, refused)
}

const WORDS: [&str; 12] = [
    "status", "ok", "the", "event", "click", "purchase", "user", "42", "; ", "é", "東京", "\n",
];

/// Payloads of many shapes: words (compressible text), random bytes
/// (incompressible), runs of one byte (overlapping offset-1 copies and
/// extended lengths), short periods (overlapping copies), and mixtures.
fn payload(rng: &mut Rng, max: u64) -> Vec<u8> {
    let n = rng.below(max + 1) as usize;
    let mut v = Vec::with_capacity(n);
    match rng.below(5) {
        0 => {
            while v.len() < n {
                v.extend_from_slice(WORDS[rng.below(12) as usize].as_bytes());
            }
        }
        1 => v.extend((0..n).map(|_| rng.next_u64() as u8)),
        2 => v.resize(n, rng.next_u64() as u8),
        3 => {
            let period: Vec<u8> = (0..1 + rng.below(20))
                .map(|_| rng.next_u64() as u8)
                .collect();
            v.extend(period.iter().cycle().take(n));
        }
        _ => {
            while v.len() < n {
                let piece = payload(rng, 300);
                v.extend_from_slice(&piece);
            }
        }
    }
    v.truncate(n);
    v
}

/// Valid streams from the CPU side's encoders (the format crate's pglz
/// compressor, lz4_flex's block compressor: both decode with PostgreSQL's
/// decompressors).
fn valid_cases(seed: u64, count: usize) -> Vec<Case> {
    let mut rng = Rng::new(seed);
    let mut cases = Vec::with_capacity(count);
    for k in 0..count {
        // Mostly values of the sizes that stay inline, a few large ones.
        let max = if k % 25 == 0 { 70_000 } else { 4_000 };
        let p = payload(&mut rng, max);
        cases.push(if k % 2 == 0 {
            Case::pglz(&p)
        } else {
            Case::lz4(&p)
        });
    }
    cases
}

#[test]
fn valid_streams_decompress_to_the_cpu_bytes() {
    let cases = valid_cases(1, 600);
    let (accepted, refused) = compare("valid", &cases);
    assert_eq!((accepted, refused), (600, 0));
}

/// Streams written by hand from the formats, for the edges the encoders
/// rarely produce.
#[test]
fn hand_written_streams() {
    use CompressionMethod::{Lz4, Pglz};
    let cases = [
        // pglz: 3 literals, then a match of 9 at offset 3 (overlapping).
        Case::raw(Pglz, 12, &[0b0000_1000, b'a', b'b', b'c', 0x06, 0x03]),
        // An extended length: 18 + 100 copies at offset 1.
        Case::raw(Pglz, 119, &[0b0000_0010, b'x', 0x0f, 0x01, 100]),
        // The same tag cut at the raw size (60 of 118 bytes).
        Case::raw(Pglz, 60, &[0b0000_0010, b'x', 0x0f, 0x01, 100]),
        // Offset 0; offset before the start; truncated tags.
        Case::raw(Pglz, 3, &[0x01, 0x00, 0x00]),
        Case::raw(Pglz, 4, &[0x02, b'a', 0x00, 0x02]),
        Case::raw(Pglz, 4, &[0x02, b'a', 0x00]),
        Case::raw(Pglz, 40, &[0x02, b'a', 0x0f, 0x01]),
        // Short output; input left over; nothing at all.
        Case::raw(Pglz, 3, &[0x00, b'a', b'b']),
        Case::raw(Pglz, 1, &[0x00, b'a', b'b']),
        Case::raw(Pglz, 0, &[]),
        Case::raw(Pglz, 0, &[0x00]),
        // A control byte with no items after it.
        Case::raw(Pglz, 1, &[0x00, b'a', 0x00]),
        // A raw size no 2 bytes could give (refused before decoding).
        Case::raw(Pglz, 1 << 29, &[0x00, b'a']),
        // LZ4: 3 literals, an overlapping match of 24 at offset 3 (nibble
        // 15 and an extension byte of 5), 5 closing literals.
        Case::raw(
            Lz4,
            32,
            &[
                0x3f, b'a', b'b', b'c', 0x03, 0x00, 0x05, 0x50, b'a', b'b', b'c', b'a', b'b',
            ],
        ),
        // A match ending at the last byte, then an empty closing sequence:
        // lz4_flex accepts it (the reference decoder would not).
        Case::raw(Lz4, 9, &[0x14, b'a', 0x01, 0x00, 0x00]),
        // A block that ends after a match; a truncated offset; offset 0;
        // an offset before the start; output beyond the raw size.
        Case::raw(Lz4, 9, &[0x14, b'a', 0x01, 0x00]),
        Case::raw(Lz4, 9, &[0x14, b'a', 0x01]),
        Case::raw(Lz4, 9, &[0x14, b'a', 0x00, 0x00, 0x00]),
        Case::raw(Lz4, 9, &[0x14, b'a', 0x02, 0x00, 0x00]),
        Case::raw(Lz4, 8, &[0x14, b'a', 0x01, 0x00, 0x00]),
        // Literal lengths with extension bytes of 255 (15 + 255 + 0).
        Case::raw(
            Lz4,
            270,
            &[&[0xf0u8, 0xff, 0x00][..], &[b'z'; 270]].concat(),
        ),
        Case::raw(Lz4, 270, &[&[0xf0u8, 0xff][..], &[b'z'; 270]].concat()),
        // An empty block, and one empty sequence.
        Case::raw(Lz4, 0, &[]),
        Case::raw(Lz4, 0, &[0x00]),
        Case::raw(Lz4, 1, &[0x10]),
        // A raw size beyond the CPU's bound for 2 bytes.
        Case::raw(Lz4, 1000, &[0x1f, b'a']),
        // Compression method bits the CPU does not know are refused by
        // the kernel before these functions (heap.cu's compressed_size).
    ];
    let (accepted, refused) = compare("hand-written", &cases);
    assert_eq!(accepted, 8, "accepted by both");
    assert_eq!(refused, cases.len() - 8);
}

/// Every valid stream changed: a raw size off by one, cut short, a byte
/// appended, bytes flipped, read with the other method; and random bytes.
#[test]
fn corrupt_streams_are_refused_or_decoded_alike() {
    let mut rng = Rng::new(77);
    let mut cases = Vec::new();
    for c in valid_cases(2, 400) {
        let n = c.data.len();
        let mut v = c.clone();
        v.rawsize = c.rawsize + 1;
        cases.push(v);
        if c.rawsize > 0 {
            let mut v = c.clone();
            v.rawsize = c.rawsize - 1;
            cases.push(v);
        }
        if n > 0 {
            let mut v = c.clone();
            v.data.truncate(rng.below(n as u64) as usize);
            cases.push(v);
        }
        let mut v = c.clone();
        v.data.push(rng.next_u64() as u8);
        cases.push(v);
        for flips in [1, 1, 2, 3] {
            if n == 0 {
                break;
            }
            let mut v = c.clone();
            for _ in 0..flips {
                let at = rng.below(n as u64) as usize;
                v.data[at] = rng.next_u64() as u8;
            }
            cases.push(v);
        }
        let mut v = c;
        v.method = match v.method {
            CompressionMethod::Pglz => CompressionMethod::Lz4,
            CompressionMethod::Lz4 => CompressionMethod::Pglz,
        };
        cases.push(v);
    }
    for k in 0..2000 {
        let n = rng.below(200) as usize;
        // A small alphabet makes valid-looking tags and tokens likelier.
        let data: Vec<u8> = (0..n)
            .map(|_| {
                if k % 2 == 0 {
                    rng.next_u64() as u8
                } else {
                    [0x00, 0x01, 0x10, 0x11, 0x0f, 0xf0, 0xff, b'a'][rng.below(8) as usize]
                }
            })
            .collect();
        let method = if k % 4 < 2 {
            CompressionMethod::Pglz
        } else {
            CompressionMethod::Lz4
        };
        cases.push(Case::raw(method, rng.below(600) as u32, &data));
    }
    let (accepted, refused) = compare("corrupt", &cases);
    // Both outcomes are exercised: a flipped literal byte still decodes.
    assert!(accepted > 50, "{accepted} accepted");
    assert!(refused > 1000, "{refused} refused");
}
