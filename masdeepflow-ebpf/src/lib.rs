#![no_std]
//! Empty: the programs are in the `masdeepflow-ebpf` binary. This library
//! exists so that `masdeepflow` can name this crate as a build dependency.
