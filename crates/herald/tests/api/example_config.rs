//! The commented example configuration shipped at the repository root is valid and
//! says exactly what the defaults are.

use herald::config::{Config, ServeArgs};

#[test]
fn the_example_config_file_is_valid_and_matches_the_defaults() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../herald.example.toml");
    let args = ServeArgs {
        config: Some(path.into()),
        ..ServeArgs::default()
    };
    let from_file = Config::resolve(args, None).expect("the example file is valid");
    let defaults = Config::resolve(ServeArgs::default(), None).expect("defaults are valid");
    assert_eq!(from_file, defaults);
}
