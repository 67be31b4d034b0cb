from bundle.cli import main

main()
