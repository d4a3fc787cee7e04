// The index of an invocation in a linear grid of LINEAR_GROUP-wide workgroups, which the host
// folds into 2-D when one row would pass the per-dimension limit (recorder.rs linear_grid).
const LINEAR_GROUP: u32 = 256u;

fn linear_index(lid: u32, wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return (wg.y * nwg.x + wg.x) * LINEAR_GROUP + lid;
}
