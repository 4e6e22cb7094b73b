fn main() {
    // Generates the parser from src/grammar.lalrpop into OUT_DIR.
    lalrpop::process_src().expect("the IR grammar (src/grammar.lalrpop) compiles");
}
