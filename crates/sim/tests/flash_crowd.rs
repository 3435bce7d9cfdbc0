//! A flash crowd of 10 000 viewers in one region (scenarios/flash-crowd.toml), steered by the
//! core's SteeringPolicy: with secondaries no viewer is ever unserved, without them thousands
//! are; the secondaries start once (no flapping), serve within the boot time plus a steering
//! TTL or two — and, thanks to the look-ahead, before the threshold is reached — relieve the primaries' uplinks, and are all retired after the crowd leaves.

use std::path::Path;

use relaycast_sim::flash::FlashScenario;

fn scenario(name: &str) -> FlashScenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios").join(name);
    assert!(FlashScenario::is_flash(&path));
    FlashScenario::load(&path).unwrap()
}

#[test]
fn ten_thousand_viewers_in_one_region_none_dropped_with_secondaries() {
    let s = scenario("flash-crowd.toml");
    assert_eq!(s.flash.viewers, 10_000);
    let r = s.run(1);
    eprintln!("{r}");
    let (with, without) = (&r.with_secondaries, &r.without_secondaries);
    assert_eq!(with.peak_viewers, 10_000, "the whole crowd was there at once");
    assert_eq!(with.viewers_dropped, 0, "with secondaries nobody is unserved");
    assert!(without.viewers_dropped >= 3000, "without, the excess over 3 × 2000 is lost: {}", without.viewers_dropped);
    // 10 000 viewers at 1 600 per edge: 3 primaries + 4 secondaries; started once each.
    assert!((3..=8).contains(&with.secondaries_started), "{} secondaries", with.secondaries_started);
    assert_eq!(with.secondaries_retired, with.secondaries_started, "all retired after the crowd left");
    let serving = with.start_to_serving_s.expect("a secondary served viewers");
    let boot = s.flash.boot_s;
    assert!(serving >= boot && serving <= boot + 2.0 * s.flash.steering_ttl_s + 2.0, "start → serving {serving} s");
    let ahead = with.threshold_to_serving_s.unwrap();
    assert!(ahead <= 2.0, "the look-ahead had a secondary serving about when the threshold was reached: {ahead} s");
    assert!(
        with.peak_primary_mbps < 0.85 * without.peak_primary_mbps,
        "secondaries relieve the primaries: {} vs {} Mbit/s",
        with.peak_primary_mbps,
        without.peak_primary_mbps
    );
}

#[test]
fn a_reactive_threshold_drops_viewers_while_secondaries_boot() {
    let r = scenario("flash-crowd-reactive.toml").run(1);
    eprintln!("{r}");
    assert!(r.with_secondaries.viewers_dropped > 0, "starting only when full leaves a gap while booting");
    assert!(r.with_secondaries.viewers_dropped < r.without_secondaries.viewers_dropped);
}
