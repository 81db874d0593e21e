//! The YAML loader with validation, as `apply -f` runs it: any text is parsed (or refused with
//! a located error) and every parsed resource validated, without a panic and in bounded time.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshrig::resources::parse::parse_documents;
use meshrig::validate;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(documents) = parse_documents("fuzz.yaml", text) else { return };
    for d in documents {
        let mut r = d.resource.clone();
        r.set_default_namespace("default");
        if let Err(errors) = validate::validate(&r) {
            for e in errors {
                let field = e.split_once(": ").map_or("", |(f, _)| f);
                let _ = d.line_of(field);
            }
        }
        let _ = validate::unenforced(&r);
    }
});
