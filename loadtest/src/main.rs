fn main() {
    println!("loadtest: see README");
}
