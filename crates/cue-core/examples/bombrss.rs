//! Peak-RSS probe (run under /usr/bin/time -v): `raw FILE` loads FILE into
//! automerge directly (what cue did before the guard), `guarded FILE` through
//! FileDoc::apply, `make-text N FILE` saves a document of an N-character text.
use automerge::transaction::Transactable;
use automerge::{ActorId, AutoCommit, ObjType, ROOT};
fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args[1].as_str() {
        "raw" => {
            let bytes = std::fs::read(&args[2]).unwrap();
            let mut doc = AutoCommit::new();
            let r = doc.load_incremental(&bytes);
            println!("raw: {:?}", r.map(|_| ()));
        }
        "guarded" => {
            let bytes = std::fs::read(&args[2]).unwrap();
            let mut doc = cue_core::doc::FileDoc::empty(ActorId::from([1; 16]));
            println!(
                "guarded: {:?}",
                doc.apply(&bytes).map_err(|e| e.to_string())
            );
        }
        "make-text" => {
            let n: usize = args[2].parse().unwrap();
            let mut doc = AutoCommit::new();
            let t = doc.put_object(ROOT, "content", ObjType::Text).unwrap();
            doc.splice_text(&t, 0, 0, &"x".repeat(n)).unwrap();
            doc.commit();
            std::fs::write(&args[3], doc.save()).unwrap();
        }
        _ => panic!("mode"),
    }
}
