//! placeholder, see the Fluxion issue
